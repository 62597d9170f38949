"""A child's device worker SIGKILLed after allocation: the multi job fails, naming that child.

Real Redis, real Celery workers under the embedded cluster's supervisor,
real SSH devices.  The parent's test_cmds wait for a file the test writes
once the dead worker's child has been ended, so the parent's own phases all
pass: only the child's end can fail the job.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from convoy.coordinator.state import keys
from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store

from helpers import CONVOY, assert_all_released, unique_queue, wait_for_state

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120


def test_a_child_whose_device_worker_is_killed_after_allocation_fails_the_job_by_name(start_cluster):
    steady_q, victim_q = unique_queue("steady"), unique_queue("victim")
    cluster = start_cluster({steady_q: 1, victim_q: 1})
    parent = submit_job({
        "job_queue": "multi",
        "provision_data": {"jobs": [{"job_queue": steady_q}, {"job_queue": victim_q}]},
        # waits (bounded) for the test's go-ahead, a file in its own directory; exit 9 if it never comes
        "test_data": {"test_cmds": "for i in $(seq 1200); do [ -e go ] && exit 0; sleep 0.1; done; exit 9"},
    })
    store = get_store()
    steady, victim = store.children(parent)
    wait_for_state(parent, "test")  # every child allocated, the parent's test_cmds waiting
    assert store.state(victim) == "allocated"
    device = store.get(victim)["device"]
    assert cluster.supervisor is not None
    os.kill(cluster.supervisor.pids()[f"device {device}"], signal.SIGKILL)

    # the restarted worker ends the job its predecessor held, and the device is cleaned
    wait_for_state(victim, "cancelled")
    (cluster.state_dir / "jobs" / parent / "go").touch()
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"

    results = job_results(parent)
    assert results["test_status"] == 0, "the parent's own test passed: only the child can fail the job"
    assert results["outcome"] == "fail"
    why = f"device worker for {device} died during allocated"
    assert results["message"] == f"child {victim} ({victim_q}): {why}"
    assert results["failed_children"] == [{"job_id": victim, "label": victim_q, "reason": why}]
    summaries = {c["job_id"]: c for c in results["children"]}
    assert summaries[victim]["reason"] == why and summaries[victim]["outcome"] == "fail"
    assert "reason" not in summaries[steady] and summaries[steady]["outcome"] == "pass"
    assert f"child {victim} ({victim_q}): {why}" in results["cleanup_output"]

    shown = subprocess.run([CONVOY, "results", parent], capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)["reasons"] == [f"child {victim} ({victim_q}): {why}"]

    assert_all_released(parent)
    assert store.client.hget(keys.device(device), "state") == "idle"
