"""The scheduler repairs what changed under an assignment (real workers, emulated devices).

A device's worker is frozen with SIGSTOP (its heartbeat stops, as a hung or
cut-off host's would) right before a job is assigned to it: the device goes
offline while assigned, before its child started, and the scheduler moves
the child to another idle device without disturbing its chord.  When the
frozen worker wakes and reads its stale message, it leaves the job alone.
"""
from __future__ import annotations

import os
import signal

import pytest

from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.devices import device_summaries, set_maintenance, set_online

from helpers import unique_queue, wait_for

pytestmark = pytest.mark.integration

JOB_TIMEOUT = 120


def health(name: str) -> str:
    return next(d.health for d in device_summaries(get_store().client) if d.name == name)


def test_a_device_going_offline_while_assigned_is_replaced_and_its_stale_message_is_ignored(start_cluster):
    q, other = unique_queue("repl"), unique_queue("repl-other")
    cluster = start_cluster({q: 2, other: 1})
    store = get_store()
    frozen, spare = [d.name for d in cluster.devices if q in d.queues]
    set_maintenance(store.client, spare, "kept out so the job is assigned to the device about to freeze")
    pid = int(store.client.hget(keys.device(frozen), "pid"))
    os.kill(pid, signal.SIGSTOP)
    try:
        parent = submit_job({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": q}, {"job_queue": other}]},
                             "test_data": {"test_cmds": "cat job_list.json"}})
        child = store.children(parent)[0]
        wait_for(lambda: store.get(child).get("assigned_device") == frozen, 30, "the child assigned to the frozen device")
        set_online(store.client, spare)
        # its alive mark runs out (15 s), the next pass (5 s at most) moves the child
        wait_for(lambda: store.get(child).get("assigned_device") == spare, 45, "the child moved to the spare device")
        assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
        assert job_results(parent)["outcome"] == "pass"
        assert store.get(child)["device"] == spare
    finally:
        os.kill(pid, signal.SIGCONT)
    # the woken worker takes its stale message, sees the child is another device's, and starts nothing
    log = cluster.state_dir / "logs" / f"{frozen}.log"
    wait_for(lambda: f"job {child} is assigned to {spare}, not {frozen}; not starting it" in log.read_text(), 60,
             "the woken worker skipping its stale message")
    assert health(frozen) == "idle"
    assert store.get(child)["device"] == spare
    assert store.get(child)["state"] == "cancelled"  # how a child ends: once, on the spare device
