"""MultiNode inside real jobs: a member that fails or is cancelled fails its group's waits at once.

Real cluster: the members' test_cmds run the real ``lava-*`` commands on
their devices' hosts while the other member fails, is cancelled or dies.
"""
from __future__ import annotations

import os
import signal

import pytest

from convoy.coordinator.state import keys
from convoy.coordinator.api import cancel_job, job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store

from helpers import assert_all_released, unique_queue, wait_for_state, wait_until

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 180
#: far longer than any test may take: a wait that ends must have been woken by the failure
LONG_WAIT = 600


def group_job(waiter_queue: str, other_queue: str, other_cmds: str) -> dict:
    return {
        "job_queue": "multi",
        "timeouts": {"multinode": LONG_WAIT},
        "provision_data": {"jobs": [
            {"job_queue": waiter_queue, "role": "waiter",
             "test_data": {"test_cmds": "echo waiting\nlava-wait never-sent"}},
            {"job_queue": other_queue, "role": "other", "test_data": {"test_cmds": other_cmds}},
        ]},
    }


def test_a_failing_member_fails_the_waiting_member_naming_it(start_cluster):
    qa, qb = unique_queue("waiter"), unique_queue("failer")
    start_cluster({qa: 1, qb: 1})
    parent = submit_job(group_job(qa, qb, "lava-send hello\nexit 3"))
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    waiter, failer = get_store().children(parent)
    waiter_results = job_results(waiter)
    assert waiter_results["test_status"] == 1
    assert f"group member {failer} failed: test_cmds exited 3" in waiter_results["test_output"]
    assert job_results(failer)["test_status"] == 3
    assert job_results(parent)["outcome"] == "fail"
    assert_all_released(parent)


def test_cancelling_a_member_fails_the_others_waits_at_once(start_cluster):
    qa, qb = unique_queue("waiter"), unique_queue("sleeper")
    start_cluster({qa: 1, qb: 1})
    parent = submit_job(group_job(qa, qb, "sleep 600"))
    waiter, sleeper = get_store().children(parent)
    store = get_store()
    assert store.wait_until([waiter], lambda: "waiting" in store.output(waiter, "test"), 60)
    wait_for_state(sleeper, "test")
    cancel_job(sleeper)
    assert store.wait_until([waiter], lambda: "ended" in store.phases(waiter).get("test", {}), 60), \
        "the waiting member was not released by the cancel"
    assert f"group member {sleeper} was cancelled" in store.output(waiter, "test")
    cancel_job(parent)
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "cancelled"
    assert_all_released(parent)


def test_a_member_whose_worker_is_killed_fails_the_others(start_cluster):
    qa, qb = unique_queue("waiter"), unique_queue("victim")
    cluster = start_cluster({qa: 1, qb: 1})
    parent = submit_job(group_job(qa, qb, "sleep 600"))
    store = get_store()
    waiter, victim = store.children(parent)
    assert store.wait_until([waiter], lambda: "waiting" in store.output(waiter, "test"), 60)
    wait_for_state(victim, "test")
    victim_device = store.get(victim)["device"]
    pid = int(store.client.hget(keys.device(victim_device), "pid"))
    os.kill(pid, signal.SIGKILL)  # the supervisor restarts it; the new worker ends the orphaned job
    assert store.wait_until([waiter], lambda: "ended" in store.phases(waiter).get("test", {}), 120), \
        "the waiting member was not released when the other member's worker died"
    assert f"group member {victim} device worker for {victim_device} died" in store.output(waiter, "test")
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    assert job_results(parent)["outcome"] == "fail"
    assert wait_until(lambda: store.client.hget(keys.device(victim_device), "state") == "idle", 60)
    assert cluster.supervisor is not None
