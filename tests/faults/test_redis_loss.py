"""Redis killed mid-job: restarted with its append-only file the job goes on; replaced empty, nothing silent.

A private Redis (the session's must not be restarted under other tests) and
a real ``convoy coordinator`` and ``convoy worker`` on it (``convoy.workers.embedded.lab``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from convoy.coordinator.state.devices import device_summaries
from convoy.workers.embedded.cluster import emulated_devices
from convoy.workers.embedded.lab import Lab
from convoy.workers.embedded.redis_server import RedisServer
from helpers import unique_queue, wait_for

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120


@pytest.fixture
def lab_on_own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    queues = [unique_queue("ra"), unique_queue("rb")]
    lab = Lab(server.url, tmp_path / "lab", emulated_devices({q: 1 for q in queues}, prefix=f"rl-{os.getpid()}"))
    try:
        yield server, lab.start()
    finally:
        lab.stop()
        server.stop()


def submit(lab: Lab, test_cmds: str, parent_cmds: str | None = None) -> str:
    """A two-device job through the real CLI (this process's own Celery app is bound to the session's Redis)."""
    import subprocess

    import yaml

    from helpers import CONVOY

    path = lab.root / f"job-{len(list(lab.root.glob('job-*')))}.yaml"
    path.write_text(yaml.safe_dump({"job_queue": "multi", "provision_data": {"jobs": [
        {"job_queue": q, "test_data": {"test_cmds": test_cmds}} for q in lab.queues]},
        **({"test_data": {"test_cmds": parent_cmds}} if parent_cmds else {})}))
    done = subprocess.run([CONVOY, "submit", str(path)], env=lab.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def final(lab: Lab, job_id: str) -> str:
    lab.wait_job(job_id, lambda: lab.store.state(job_id) in ("complete", "cancelled"), JOB_TIMEOUT, "the end")
    return lab.store.state(job_id)


def test_redis_restarted_with_its_append_only_file_mid_job_the_job_completes(lab_on_own_redis):
    server, lab = lab_on_own_redis
    # the children wait for the test's go-ahead: a file in each one's own job directory
    parent = submit(lab, "echo testing; for i in $(seq 600); do [ -e go ] && exit 0; sleep 0.1; done; exit 9")
    children = lab.store.children(parent)
    for child in children:
        lab.wait_job(child, lambda c=child: "testing" in lab.store.output(c, "test"), what="the child's test")
    server.kill()
    server.start()
    for child in children:
        (Path(lab.env["CONVOY_STATE_DIR"]) / "jobs" / child / "go").touch()
    assert final(lab, parent) == "complete"
    assert lab.store.get(parent)["outcome"] == "pass", lab.store.get(parent).get("message")
    wait_for(lab.all_idle, timeout=60, what="every device idle")


def test_redis_replaced_by_an_empty_one_devices_come_back_and_the_lost_job_is_reported(lab_on_own_redis):
    server, lab = lab_on_own_redis
    parent = submit(lab, "echo testing; sleep 600", parent_cmds="sleep 600")
    children = lab.store.children(parent)
    for child in children:
        lab.wait_job(child, lambda c=child: "testing" in lab.store.output(c, "test"), what="the child's test")
    server.kill()
    shutil.rmtree(server.data_dir)  # its data is gone: an empty Redis on the same address
    server.start()

    # the workers register their devices again by themselves, within a few heartbeats
    names = {d.name for d in lab.devices}
    wait_for(lambda: names <= {s.name for s in device_summaries(lab.client)}, timeout=30,
             what="devices registered again")
    # each worker reports the job it lost where it still is known: its log and the job's directory
    for child in children:
        lost = lab.root / "state" / "jobs" / child / "LOST"
        wait_for(lost.exists, timeout=30, what=f"{lost} written")
        assert f"job {child} on device" in lost.read_text() and "was lost" in lost.read_text()
    log = "".join(p.read_text(errors="replace") for p in (lab.root / "state" / "logs").glob("*.log"))
    assert all(f"job {child} on device" in log for child in children)
    # and the coordinator stops the parent's own test commands and reports the multi job lost (were they
    # left running, its test step would still be in them: no report for ten minutes)
    parent_lost = lab.root / "state" / "jobs" / parent / "LOST"
    wait_for(parent_lost.exists, timeout=30, what=f"{parent_lost} written")
    assert f"multi job {parent} was lost during its test step" in parent_lost.read_text()
    # the devices were cleaned (the lost job's processes ended) and a new job runs on them
    wait_for(lab.all_idle, timeout=60, what="every device cleaned and idle")
    again = submit(lab, "true")
    assert final(lab, again) == "complete" and lab.store.get(again)["outcome"] == "pass"
