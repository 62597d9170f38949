"""Redis killed and restarted (append-only file on) while a job prints a line a second.

A private Redis of its own (the session's Redis must not be restarted under
other tests), an embedded cluster of real workers and a real SSH device on
it, the job submitted and read through the real CLI (this process's Celery
app is bound to the session's Redis).  Redis is SIGKILLed by pid once line 5
is in the job's output and started again on the same port and data dir once
the script has printed three more lines: those lines were printed while
Redis was down.  The job must end, and either every line is in its output,
in order, exactly once, or the output says output was lost and the job did
not pass.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from convoy.coordinator.state.connection import make_client
from convoy.config.lifecycle import FINAL_STATES
from convoy.coordinator.state.jobs import JobStore
from convoy.workers.embedded.cluster import EmbeddedCluster, emulated_devices
from convoy.workers.embedded.redis_server import RedisServer

from helpers import CONVOY, unique_queue, wait_for

pytestmark = pytest.mark.integration
LINES = 20
JOB_TIMEOUT = 120


def printing_job(queue: str) -> dict:
    """``line 1`` … ``line 20``, one a second; ``progress`` in its job directory holds the last number printed."""
    return {"job_queue": queue, "test_data": {"test_cmds": (
        f'for i in $(seq 1 {LINES}); do echo "line $i"; echo $i > progress; sleep 1; done')}}


def printed(progress: Path) -> int:
    text = progress.read_text().strip() if progress.exists() else ""
    return int(text) if text else 0


def convoy(redis_url: str, *args: str) -> str:
    env = {**os.environ, "CONVOY_REDIS_URL": redis_url}
    done = subprocess.run([CONVOY, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"convoy {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def test_a_redis_restart_mid_job_loses_no_output_silently(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    queue = unique_queue("restart")
    cluster = EmbeddedCluster(tmp_path / "cluster", emulated_devices({queue: 1}, prefix=f"rr-{os.getpid()}"),
                              redis_url=server.url, configure_process=False, log=lambda m: print(f"[cluster] {m}"))
    try:
        cluster.start()
        job_file = tmp_path / "job.yaml"
        job_file.write_text(yaml.safe_dump(printing_job(queue)))
        job_id = convoy(server.url, "submit", str(job_file)).strip()
        progress = tmp_path / "cluster" / "jobs" / job_id / "progress"  # the job's own directory
        store = JobStore(make_client(server.url))

        assert store.wait_until([job_id], lambda: "line 5\n" in store.output(job_id, "test"), JOB_TIMEOUT), \
            f"line 5 never reached the job's output; job is {store.state(job_id)}"
        server.kill()
        wait_for(lambda: printed(progress) >= 8, timeout=30, what="three lines printed while Redis is down")
        server.start()

        assert store.wait_until([job_id], lambda: store.state(job_id) in FINAL_STATES, JOB_TIMEOUT), \
            f"job never ended after the restart; it is {store.state(job_id)}"
        results = json.loads(convoy(server.url, "results", job_id))
        output = results.get("test_output", "")
        numbered = [int(n) for n in re.findall(r"^line (\d+)$", output, re.MULTILINE)]
        if numbered != list(range(1, LINES + 1)):
            assert re.search(r"\*\*\* \d+ bytes of output lost: .+ \*\*\*", output), \
                f"lines {numbered} of 1..{LINES} and no loss reported:\n{output}"
            assert results["outcome"] != "pass", f"output was lost and the job passed:\n{output}"
    finally:
        cluster.stop()
        server.stop()
