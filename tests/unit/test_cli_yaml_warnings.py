"""The real ``convoy`` command shows the YAML loader's warnings and refusals (LAVA's loader rules).

``convoy validate`` needs no server; ``convoy submit`` prints the warnings while reading the file,
before it needs Redis, so an unreachable Redis is enough to see them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONVOY = str(Path(sys.executable).parent / "convoy")
DATA = Path(__file__).resolve().parent.parent / "data"
TIMEOUT = 60

DUPLICATE = """\
job_queue: rpi4b
provision_data:
  distro: jammy
test_data:
  test_cmds: [uname -a]
global_timeout: 1h
name: smoke
global_timeout: 2h
"""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONVOY, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, **(env or {})}, check=False)


def normalised(stdout: str) -> dict:
    first, _, rest = stdout.partition("\n")
    assert first.endswith(": valid"), stdout
    return json.loads(rest)


@pytest.fixture
def duplicate_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(DUPLICATE)
    return path


def test_validate_accepts_a_duplicate_key_and_warns_with_both_lines(duplicate_file: Path):
    result = run_cli("validate", str(duplicate_file))
    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"warning: {duplicate_file}: line 8: duplicate key 'global_timeout' (first at line 6); "
                             "the last one is used, as LAVA does\n")
    assert normalised(result.stdout)["global_timeout"] == 7200  # the last one


def test_submit_warns_before_it_needs_the_server(duplicate_file: Path):
    result = run_cli("submit", str(duplicate_file), env={"CONVOY_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode != 0
    assert result.stderr.startswith(f"warning: {duplicate_file}: line 8: duplicate key 'global_timeout' "
                                    "(first at line 6)"), result.stderr
    assert "error: " in result.stderr and "Traceback" not in result.stderr


def test_validate_accepts_anchors_aliases_and_merge_keys():
    path = DATA / "good_jobs" / "lava_style_yaml.yaml"
    result = run_cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "line 16: duplicate key 'provision_data' (first at line 15)" in result.stderr
    jobs = normalised(result.stdout)["provision_data"]["jobs"]
    assert [(j["job_queue"], j["provision_data"]) for j in jobs] == [
        ("rpi4b", {"distro": "jammy"}), ("maas-x86", {"distro": "jammy"}), ("maas-x86", {"distro": "noble"})]
    assert jobs[1]["test_data"] == jobs[0]["test_data"]  # merged from the anchored job


@pytest.mark.parametrize("text, expected", [
    ("job_queue: rpi4b\nprovision_data: &p {distro: jammy, again: *p}\n",
     "recursive alias *p: it refers to the collection &p that contains it at line 2, column 43"),
    (None, "document has too many values (limit 100000) once alias *e is expanded at line 11, column 10"),
])
def test_validate_refuses_a_recursive_alias_and_an_alias_bomb_naming_the_line(tmp_path: Path, text, expected):
    if text is None:
        path = DATA / "bad_jobs" / "alias_bomb.yaml"
    else:
        path = tmp_path / "job.yaml"
        path.write_text(text)
    result = run_cli("validate", str(path))
    assert result.returncode != 0
    assert f"{path}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr and "warning:" not in result.stderr
