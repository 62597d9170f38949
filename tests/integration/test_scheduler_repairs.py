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

import psutil
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
        wait_for(lambda: store.get(child).get("assigned_device") == frozen, 30,
                 "the child assigned to the frozen device")
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


def test_an_assignment_whose_message_was_never_sent_is_sent_again(start_cluster):
    """As a scheduler killed between assigning a device and publishing would leave it."""
    from convoy.coordinator.state import schedule
    from convoy.coordinator.state.jobs import now_iso

    q = unique_queue("resend")
    cluster = start_cluster({q: 1})
    (device,) = [d.name for d in cluster.devices]
    store = get_store()
    set_maintenance(store.client, device, "held while the test plays the scheduler")
    job_id = submit_job({"job_queue": q, "test_data": {"test_cmds": "echo ran once"}})
    # back in service and assigned long ago in one step (no scheduler pass in between); nothing published
    script_keys = [keys.SCHEDULER_WAITING, keys.job(job_id), keys.device(device), keys.device_alive(device),
                   keys.job(job_id)]
    with store.client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.device(device), "maintenance", "")
        pipe.eval(schedule._ASSIGN, len(script_keys), *script_keys, job_id, now_iso())
        pipe.hset(keys.device(device), "since", "2000-01-01T00:00:00.000+00:00")
        assert pipe.execute()[1] == [1, ""]
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert results["outcome"] == "pass" and results["test_output"].count("ran once") == 1
    wait_for(lambda: health(device) == "idle", 30, "the device idle again")


class SchedulerDied(BaseException):
    """Stands for the scheduler's process dying between two sends of one chord."""


def test_a_chord_half_sent_by_a_dying_scheduler_is_completed_by_the_next_one(start_cluster, coordinator_process,
                                                                             monkeypatch):
    from convoy.tasks.celery import app
    from convoy.tasks.scheduler import Scheduler

    a, b = unique_queue("half-a"), unique_queue("half-b")
    start_cluster({a: 1, b: 1}, coordinator=False)
    store = get_store()
    # the lab's coordinator (its Celery worker, whose scheduler holds the lease) is frozen meanwhile ...
    coordinator = [p.pid for p in psutil.Process(coordinator_process.pid).children(recursive=True)]
    for pid in coordinator:
        os.kill(pid, signal.SIGSTOP)
    try:
        parent = submit_job({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": a}, {"job_queue": b}]},
                             "test_data": {"test_cmds": "test -s job_list.json"}})
        first, second = store.children(parent)
        send = app.amqp.send_task_message
        sent: list[str] = []

        def dies_before_the_second_child(producer, name, message, **kwargs):
            if name == "convoy.device.child_job":
                sent.append(message.headers["id"])
                if len(sent) == 2:
                    raise SchedulerDied()
            return send(producer, name, message, **kwargs)

        monkeypatch.setattr(app.amqp, "send_task_message", dies_before_the_second_child)
        with pytest.raises(SchedulerDied):
            Scheduler(store, app).decide()
        monkeypatch.undo()
        assert sent == [first, second] and store.get(second)["state"] == "waiting"
        assert store.get(first).get("chord_part") and not store.get(second).get("chord_part")
    finally:
        for pid in coordinator:  # ... and dies: its supervisor starts another, whose scheduler leads next
            os.kill(pid, signal.SIGKILL)
    # the new scheduler sends the second child again at once, in its chord, and the job goes on
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    assert job_results(parent)["outcome"] == "pass", job_results(parent).get("message")
    assert store.get(second)["chord_part"]["group_index"] == 1
