"""How fast bad documents are refused: the figures the unit tests no longer time.

Each case prints p50/p95 next to its peer measured in the same run:

* a 5 MiB job file, refused on its size  vs  reading the file's bytes;
* a YAML list one value over ``MAX_NODES``, refused at the limit  vs
  PyYAML's ``CSafeLoader`` loading the same text with no limit;
* a multi job of 512 bad children, every problem found and capped  vs
  validating one good single-device job.

    .venv/bin/python bench/validation.py [--iterations 10]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from common import fmt_ms, machine_line, summary, table
from convoy.config import yamlsafe
from convoy.config.jobs import load_job, validate_job
from convoy.errors import JobValidationError


def timed(fn: Callable[[], Any], iterations: int) -> dict[str, float]:
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        try:
            fn()
        except JobValidationError:
            pass
        seconds.append(time.perf_counter() - start)
    return summary(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    n = args.iterations
    with tempfile.TemporaryDirectory() as tmp:
        huge = Path(tmp) / "huge.yaml"
        line = "# " + "x" * 98 + "\n"
        huge.write_text("job_queue: rpi4b\n" + line * (5 * 1024 * 1024 // len(line)))
        many_values = "- a\n" * (yamlsafe.MAX_NODES + 10)
        bad_children = {"job_queue": "multi", "provision_data": {"jobs": [
            {"job_queue": 1, "tags": list(range(300)), "typo": 1} for _ in range(512)]}}
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        cases = [
            ("5 MiB file refused", timed(lambda: load_job(huge), n),
             "read the file", timed(huge.read_bytes, n)),
            (f"{yamlsafe.MAX_NODES + 10} values refused", timed(lambda: yamlsafe.load_yaml(many_values), n),
             "CSafeLoader, no limit", timed(lambda: yaml.load(many_values, Loader=loader), n)),
            ("512 bad children", timed(lambda: validate_job(bad_children), n),
             "one good job", timed(lambda: validate_job({"job_queue": "rpi4b"}), n)),
        ]
    print(machine_line())
    rows = [[name, fmt_ms(ours["p50"]), fmt_ms(ours["p95"]), peer, fmt_ms(theirs["p50"]), fmt_ms(theirs["p95"])]
            for name, ours, peer, theirs in cases]
    print(table(["case", "p50", "p95", "peer", "peer p50", "peer p95"], rows))


if __name__ == "__main__":
    main()
