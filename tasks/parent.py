"""The parent of a multi job: collect → reserve → test → cleanup, on the coordinator.

``collect`` is the chord's body: it runs the moment the last child is
allocated and writes ``job_list.json``.  Each later task skips its work when
the job was cancelled or its allocation aborted, so ``cleanup`` — the end of
the chain, also queued directly by an abort — always runs, exactly once.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any
from collections.abc import Callable

from celery import Task

from convoy.tasks.celery import app
from convoy.config.jobs import is_guest
from convoy.tasks import canvas
from convoy.tasks.cancel import cancel_device_job
from convoy.coordinator.state.connection import get_store
from convoy.config.outcome import ChildFailure, child_failure, final_state
from convoy.config.lifecycle import FINAL_STATES, JobState, Outcome, Phase, Signal
from convoy.coordinator.state.jobs import JobStore
from convoy.tasks import events as states
from convoy.coordinator.state.control import ControlWatcher
from convoy.coordinator.state.schedule import clear_deadline
from convoy.tasks.run.env import device_targets, multinode_files, parent_dir, parent_test_env
from convoy.tasks.run.guests import start_guest
from convoy.tasks.run.phase import PhaseRun
from convoy.tasks.run.script import run_script

log = logging.getLogger(__name__)

#: how long cleanup waits for every child to release its device
CHILD_RELEASE_TIMEOUT = 600.0


def _skip(store: JobStore, parent_id: str) -> bool:
    record = store.get(parent_id)
    return record["state"] in FINAL_STATES or bool(record.get("cancel_requested")) or \
        store.happened(parent_id, "abort")


def _phase(task: Task, store: JobStore, parent_id: str, phase: Phase) -> PhaseRun:
    """The bookkeeping of one of the parent's phases, announced as ``task``'s state."""
    return PhaseRun(store, parent_id, phase, announce=states.announcer(task))


@app.task(bind=True, name=canvas.COLLECT)
def collect(self: Task, results: list[Any], parent_id: str) -> None:
    """Chord body: every child is allocated; write job_list.json, enter ``allocated``.

    ``results`` are what each child reported when its device was allocated
    (``{"job_id", "device_info"}``), in ``provision_data.jobs`` order: the
    chord hands over the very data job_list.json holds.
    """
    store = get_store()
    if _skip(store, parent_id):
        clear_deadline(store.client, parent_id)
        return
    job_list = canvas.job_list(results, lambda: device_targets(store, parent_id))
    path = parent_dir(parent_id) / "job_list.json"
    path.write_text(json.dumps(job_list, indent=2) + "\n")
    # the parent moves on first; the bookkeeping below is for the record
    provision = _phase(self, store, parent_id, Phase.PROVISION)
    provision.transition(JobState.ALLOCATED, allowed_from=[JobState.PROVISION], allocated_at=f"{time.time():.6f}")
    clear_deadline(store.client, parent_id)  # allocated: allocation_timeout no longer applies
    provision.end(0)
    allocate = _phase(self, store, parent_id, Phase.ALLOCATE)
    allocate.start(announce=False)
    allocate.out(f"all {len(job_list)} devices allocated; wrote {path}")
    allocate.end(0)
    allocate.announce(JobState.ALLOCATED, devices=len(job_list))


@app.task(bind=True, name=canvas.RESERVE)
def reserve(self: Task, parent_id: str) -> None:
    store = get_store()
    if _skip(store, parent_id):
        return
    job = store.get(parent_id)["document"]
    if not job.get("reserve_data"):
        return
    from convoy.tasks.run.reserve import run_reservation

    run = _phase(self, store, parent_id, Phase.RESERVE)
    run.transition(JobState.RESERVE)
    run.start()
    with ControlWatcher(store.client, parent_id) as control:
        status = run_reservation(store, parent_id, job, control, run.out,
                                 on_reserved=lambda devices: run.announce(
                                     "reserved", devices=[d.hint for d in devices]))
    run.end(status)


@app.task(bind=True, name=canvas.TEST)
def test(self: Task, parent_id: str) -> None:
    """Run the parent's test_cmds here and every child's on its device, together."""
    store = get_store()
    if _skip(store, parent_id):
        return
    job = store.get(parent_id)["document"]
    test_data = job.get("test_data") or {}
    run = _phase(self, store, parent_id, Phase.TEST)
    if (store.phases(parent_id).get(Phase.RESERVE) or {}).get("status", 0) != 0:
        run.out("reserve phase failed; skipping the test phase")
        return
    children = [store.get(cid) for cid in store.children(parent_id)]
    guests = [c["job_id"] for c in children if is_guest(c["document"])]
    testing_children = [c["job_id"] for c in children if not is_guest(c["document"])
                        and (c["document"].get("test_data") or {}).get("test_cmds")]
    if not test_data.get("test_cmds") and not testing_children and not guests:
        return
    run.transition(JobState.TEST)
    run.start()
    out = run.out
    for cid in testing_children:
        store.signal(cid, Signal.TEST)
    status = 0
    with ControlWatcher(store.client, parent_id) as control:
        guest_runs = [start_guest(store, parent_id, gid, control.cancel_event) for gid in guests]
        if test_data.get("test_cmds"):
            env = parent_test_env(store, parent_id, job)
            status = run_script(test_data["test_cmds"], cwd=parent_dir(parent_id), env=env, on_output=run.write,
                                cancel=control.cancel_event, timeout=job.get("global_timeout"),
                                output_timeout=job.get("output_timeout"),
                                private_files=multinode_files(parent_dir(parent_id), env))
        if testing_children:
            status = max(status, _wait_children_tests(store, testing_children, job, out))
        for gid, guest in zip(guests, guest_runs):
            guest.join()
            code = (store.phases(gid).get(Phase.TEST) or {}).get("status", 1)
            if code != 0:
                out(f"guest {gid}: test_cmds exited {code}")
                status = max(status, 1)
    run.end(status)


def _wait_children_tests(store: JobStore, children: list[str], job: dict[str, Any],
                         out: Callable[[str], None]) -> int:
    def test_ended(cid: str) -> bool:
        phase = store.phases(cid).get(Phase.TEST) or {}
        return "ended" in phase or store.state(cid) in FINAL_STATES

    store.wait_until(children, lambda: all(test_ended(c) for c in children), job.get("global_timeout"))
    status = 0
    for cid in children:
        code = (store.phases(cid).get(Phase.TEST) or {}).get("status")
        if code is None:
            out(f"child {cid}: test did not finish")
            status = 1
        elif code != 0:
            out(f"child {cid}: test_cmds exited {code}")
            status = 1
    return status


@app.task(bind=True, name=canvas.CLEANUP)
def cleanup(self: Task, parent_id: str) -> None:
    """Release every child (each cleans its device), then end the parent. Runs once."""
    store = get_store()
    if not store.once(parent_id, "cleanup"):  # a once-key's name, not a state
        return
    run = _phase(self, store, parent_id, Phase.CLEANUP)
    run.transition(JobState.CLEANUP)
    run.start()
    out = run.out
    children = store.children(parent_id)
    current = store.states(children)
    with store.pipeline(transaction=False) as pipe:
        for cid, state in current.items():
            if state not in FINAL_STATES:
                # a child still running its own test_cmds is stopped; an idle one is released
                store.signal(cid, Signal.CANCEL if state == JobState.TEST else Signal.RELEASE, pipe=pipe)
        pipe.execute()
    for cid, state in current.items():
        if state == JobState.WAITING:  # still in its queue: it never gets a device
            store.transition(cid, JobState.CANCELLED, allowed_from=[JobState.WAITING], outcome=Outcome.CANCELLED,
                             message=f"parent job {parent_id} ended before it started")
    released = store.wait_until(children, lambda: all(s in FINAL_STATES for s in store.states(children).values()),
                                CHILD_RELEASE_TIMEOUT)
    status = 0
    if not released:
        for cid, state in store.states(children).items():
            if state not in FINAL_STATES:
                out(f"child {cid} did not release its device within {CHILD_RELEASE_TIMEOUT:g}s")
                cancel_device_job(store, cid, "did not release in time")
                store.transition(cid, JobState.CANCELLED, outcome=Outcome.FAIL, message="did not release in time")
                status = 1
    out(f"released {len(children)} device(s)")
    ends = store.child_ends(children)
    for end in ends:
        if (reason := child_failure(end)) is not None:
            out(ChildFailure(end.job_id, end.label, reason).describe())
    run.end(status)
    _finish_group(store, parent_id)
    record = store.get(parent_id)
    # pass only if every phase of the parent and every child passed; the message names what did not
    verdict = store.verdict(parent_id, ends, record)
    ending: dict[str, str] = {"outcome": verdict.outcome}
    if verdict.outcome == Outcome.FAIL and not record.get("message") and verdict.reasons:
        ending["message"] = "; ".join(verdict.reasons)
    run.conclude(final_state(bool(record.get("cancel_requested"))), **ending)


def _finish_group(store: JobStore, parent_id: str) -> None:
    try:
        from convoy.coordinator.multinode.group import expire_group

        expire_group(store.client, parent_id, 24 * 3600)
    except ImportError:  # pragma: no cover - MultiNode is part of convoy
        pass
