#!/usr/bin/env python3
"""Rewrite the lint baseline in pyproject.toml from today's findings.

The baseline lists, per file (ruff) and per module (mypy), the rules that
code written before the linters still breaks, so CI passes while new code is
held to every rule.  Run it after fixing old findings (entries disappear) or
once when the linters arrive; never to make a new finding go away.

    .venv/bin/python scripts/lint_baseline.py [--bin .venv/bin]

Only the lines between the ``# >>> ruff baseline`` / ``# <<< ruff baseline``
and ``# >>> mypy baseline`` / ``# <<< mypy baseline`` markers change.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
#: where scripts/lint.sh links the repository root as a folder named `convoy`, for mypy
MYPY_SRC = Path(".mypy_cache/src")
MYPY_ERROR = re.compile(r"^(?P<path>.+?\.pyi?):\d+(?::\d+)?: error: .*\[(?P<code>[a-z0-9-]+)\]$")


def _block(text: str, name: str) -> tuple[int, int]:
    """Offsets of the lines between the markers of the named baseline."""
    begin = text.index(f"# >>> {name} baseline\n") + len(f"# >>> {name} baseline\n")
    return begin, text.index(f"# <<< {name} baseline\n", begin)


def _replace(text: str, name: str, body: str) -> str:
    begin, end = _block(text, name)
    return text[:begin] + body + text[end:]


def ruff_findings(bin_dir: Path) -> dict[str, set[str]]:
    """Rules broken per file (run while the baseline blocks are empty; the policy table still applies)."""
    out = subprocess.run([str(bin_dir / "ruff"), "check", ".", "--no-cache", "--output-format", "json"],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"ruff failed:\n{out.stderr}")
    found: dict[str, set[str]] = defaultdict(set)
    for item in json.loads(out.stdout or "[]"):
        if item.get("code"):  # a syntax error has none and cannot be baselined
            found[Path(item["filename"]).resolve().relative_to(ROOT).as_posix()].add(item["code"])
    return found


def mypy_findings(bin_dir: Path) -> dict[str, set[str]]:
    """Error codes per module (run while the baseline blocks are empty)."""
    (ROOT / MYPY_SRC).mkdir(parents=True, exist_ok=True)
    link = ROOT / MYPY_SRC / "convoy"
    if not link.is_symlink():
        link.symlink_to(Path("..") / "..")
    out = subprocess.run([str(bin_dir / "mypy"), "--no-incremental"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"mypy failed:\n{out.stdout}{out.stderr}")
    found: dict[str, set[str]] = defaultdict(set)
    prefix = MYPY_SRC.as_posix() + "/"
    for line in out.stdout.splitlines():
        if (match := MYPY_ERROR.match(line)) is None or not match["path"].startswith(prefix):
            continue
        module = re.sub(r"\.pyi?$", "", match["path"][len(prefix):]).replace("/", ".")
        found[module.removesuffix(".__init__")].add(match["code"])
    return found


def _codes(codes: set[str]) -> str:
    return "[" + ", ".join(f'"{c}"' for c in sorted(codes)) + "]"


def render_ruff(found: dict[str, set[str]]) -> str:
    return "".join(f'"{path}" = {_codes(codes)}\n' for path, codes in sorted(found.items()))


def render_mypy(found: dict[str, set[str]]) -> str:
    return "".join(f'[[tool.mypy.overrides]]\nmodule = "{module}"\ndisable_error_code = {_codes(codes)}\n'
                   for module, codes in sorted(found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=ROOT / ".venv" / "bin", help="folder holding ruff and mypy")
    args = parser.parse_args()
    original = PYPROJECT.read_text()
    # the tools read pyproject.toml itself (paths in it are relative to it): empty the blocks while they run
    PYPROJECT.write_text(_replace(_replace(original, "ruff", ""), "mypy", ""))
    try:
        ruff, mypy = ruff_findings(args.bin), mypy_findings(args.bin)
    except BaseException:
        PYPROJECT.write_text(original)
        raise
    mypy_block = render_mypy(mypy)
    for _ in range(3):  # ignoring a rule for a file makes a noqa comment for it unused (RUF100): repeat
        PYPROJECT.write_text(_replace(_replace(original, "ruff", render_ruff(ruff)), "mypy", mypy_block))
        more = ruff_findings(args.bin)
        if not more:
            break
        for path, codes in more.items():
            ruff.setdefault(path, set()).update(codes)
    print(f"baseline: ruff {sum(map(len, ruff.values()))} rule(s) in {len(ruff)} file(s); "
          f"mypy {sum(map(len, mypy.values()))} code(s) in {len(mypy)} module(s)")


if __name__ == "__main__":
    main()
