"""global_timeout: fixed when the test first starts, enforced by the runner, backed by a durable deadline.

Real Redis, real workers and SSH devices (the embedded cluster).
"""
from __future__ import annotations

import time

import pytest

from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.timers import Timer, set_timer, timer_at
from convoy.tasks.run.global_timeout import BACKSTOP_SECONDS
from helpers import assert_all_released, unique_queue

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120


def test_the_runner_stops_the_test_at_the_global_timeout_and_the_job_fails(start_cluster):
    queue = unique_queue("gt")
    start_cluster({queue: 1})
    job_id = submit_job({"job_queue": queue, "global_timeout": 2, "test_data": {"test_cmds": "sleep 60"}})
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert results["outcome"] == "fail" and results["test_status"] == 143
    assert "test_cmds timed out after 2s; stopping it" in results["test_output"]
    record = get_store().get(job_id)
    started = get_store().phases(job_id)["test"]["started"]
    assert float(record["global_deadline"]) > 0 and started  # the deadline was recorded with the job
    # the durable deadline sits BACKSTOP_SECONDS after it: the runner's own stop comes first
    assert timer_at(get_store().client, Timer.GLOBAL, job_id) in (None, pytest.approx(
        float(record["global_deadline"]) + BACKSTOP_SECONDS))


def test_a_test_that_outlives_its_deadline_unenforced_is_stopped_by_the_scheduler(start_cluster):
    queue = unique_queue("gt")
    start_cluster({queue: 1})
    job_id = submit_job({"job_queue": queue, "global_timeout": 3600,
                         "test_data": {"test_cmds": "echo started; sleep 120"}})
    store = get_store()
    assert store.wait_until([job_id], lambda: "started" in store.output(job_id, "test"), JOB_TIMEOUT)
    # as if the deadline had passed with no runner enforcing it: the durable timer is due now
    set_timer(store.client, Timer.GLOBAL, job_id, time.time())
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert results["outcome"] == "fail" and results["test_status"] == 143
    assert "global_timeout reached and the test still runs; stopping it" in results["test_output"]
    assert store.client.hget(keys.device(store.get(job_id)["device"]), "state") == "idle"


def test_a_childs_global_timeout_stops_its_test_and_fails_the_multi_job(start_cluster):
    a, b = unique_queue("gta"), unique_queue("gtb")
    start_cluster({a: 1, b: 1})
    parent = submit_job({"job_queue": "multi", "provision_data": {"jobs": [
        {"job_queue": a, "global_timeout": 2, "test_data": {"test_cmds": "sleep 60"}},
        {"job_queue": b, "test_data": {"test_cmds": "true"}}]}})
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "fail"
    assert "test stopped (exit 143)" in results["message"]
    assert_all_released(parent)
