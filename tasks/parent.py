"""The parent of a multi job: collect → reserve → test → cleanup, as short steps on any coordinator.

``collect`` is the chord's body: it runs the moment the last child is
allocated and writes ``job_list.json``.  Every step runs under the parent's
step lease and sends the step owed next (:mod:`convoy.tasks.steps`), so a
coordinator that dies mid-step leaves nothing behind: the scheduler sends the
step again and it resumes from the record.  A reservation holds no thread:
its end is a durable deadline (:mod:`convoy.coordinator.state.timers`).  The
parent's test commands are a tracked process (pid and host recorded); if
their coordinator dies, the re-run test step ends them and fails the phase.
"""
from __future__ import annotations

import json
import logging
import socket
import time
from datetime import datetime, UTC
from typing import Any
from collections.abc import Callable

from celery import Task

from convoy.tasks.celery import app
from convoy.config.jobs import is_guest
from convoy.config.settings import Settings, load_settings
from convoy.config.steps import ParentStep
from convoy.errors import ConvoyError, JobNotFound
from convoy.tasks import canvas
from convoy.tasks.cancel import cancel_device_job
from convoy.config.outcome import ChildFailure, child_failure, final_state
from convoy.config.lifecycle import FINAL_STATES, JobState, Outcome, Phase, Signal
from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.timers import Timer, clear_timers, set_timer
from convoy.tasks import events as states
from convoy.coordinator.state.control import ControlWatcher
from convoy.coordinator.state.schedule import clear_deadline
from convoy.tasks.steps import advance, run_step
from convoy.tasks.run.artifacts import upload_artifacts
from convoy.tasks.run.env import device_targets, multinode_files, multinode_timeout, parent_dir, parent_test_env
from convoy.tasks.run.relay import relay_env
from convoy.tasks.run.global_timeout import remaining, test_deadline
from convoy.tasks.run.guests import start_guest
from convoy.tasks.run.jobkeys import forget_job_key, parent_key
from convoy.tasks.run.phase import PhaseRun
from convoy.tasks.run.script import kill_process_group, run_script

log = logging.getLogger(__name__)

#: how long cleanup waits for every child to release its device
CHILD_RELEASE_TIMEOUT = 600.0
#: after a child ended mid-test (its device died), how long the others may take to end by themselves
STOP_OTHERS_GRACE_SECONDS = 5.0


def _phase(task: Task | None, store: JobStore, parent_id: str, phase: Phase) -> PhaseRun:
    """The bookkeeping of one of the parent's phases, announced as ``task``'s state."""
    return PhaseRun(store, parent_id, phase, announce=states.announcer(task) if task is not None else None)


@app.task(bind=True, name=canvas.COLLECT, acks_late=True)
def collect(self: Task, results: list[Any] | None, parent_id: str) -> None:
    """Every child is allocated: write job_list.json, enter ``allocated``.

    ``results`` are what each child reported when its device was allocated
    (``{"job_id", "device_info"}``), in ``provision_data.jobs`` order: the
    chord hands over the very data job_list.json holds (a collect sent again
    after a crash reads the store instead).
    """
    def body(store: JobStore) -> bool:
        job_list = canvas.job_list(results, lambda: device_targets(store, parent_id))
        path = parent_dir(parent_id) / "job_list.json"
        path.write_text(json.dumps(job_list, indent=2) + "\n")
        # the parent moves on first; the bookkeeping below is for the record
        provision = _phase(self, store, parent_id, Phase.PROVISION)
        provision.transition(JobState.ALLOCATED, allowed_from=[JobState.PROVISION],
                             allocated_at=f"{time.time():.6f}")
        clear_deadline(store.client, parent_id)  # allocated: allocation_timeout no longer applies
        provision.end(0)
        allocate = _phase(self, store, parent_id, Phase.ALLOCATE)
        allocate.start(announce=False)
        allocate.out(f"all {len(job_list)} devices allocated; wrote job_list.json for the parent's commands on "
                     f"coordinator host {socket.gethostname()} ({path}); `convoy results {parent_id}` lists them "
                     "from anywhere")
        allocate.end(0)
        allocate.announce(JobState.ALLOCATED, devices=len(job_list))
        return True

    run_step(parent_id, ParentStep.COLLECT, body)


@app.task(bind=True, name=canvas.RESERVE, acks_late=True)
def reserve(self: Task, parent_id: str) -> None:
    """Copy the users' keys to every device, then hold them until the reservation's deadline (no thread)."""
    def body(store: JobStore) -> bool:
        from convoy.tasks.run.reserve import run_reservation

        job = store.get(parent_id)["document"]
        run = _phase(self, store, parent_id, Phase.RESERVE)
        run.transition(JobState.RESERVE)
        run.start()

        def reserved(devices: list, seconds: float) -> None:
            until = time.time() + seconds
            with store.pipeline() as pipe:
                store.set_fields(parent_id, pipe, reserve_until=f"{until:.3f}", reserve_started=f"{time.time():.3f}")
                set_timer(pipe, Timer.RESERVATION, parent_id, until)
                pipe.execute()
            run.announce("reserved", devices=[d.hint for d in devices], expires=until)

        with ControlWatcher(store.client, parent_id) as control:
            status = run_reservation(store, parent_id, job, control, run.out, on_reserved=reserved)
        if status != 0 or control.received(Signal.CANCEL):
            run.end(status)
            return True  # nothing to hold
        return False  # held until its deadline: end_reservation finishes the step

    run_step(parent_id, ParentStep.RESERVE, body)


def end_reservation(store: JobStore, parent_id: str, why: str | None) -> bool:
    """End the parent's reservation now (``why``: ``convoy release``, a cancel; None: its deadline).

    False if no reservation holds.  The reserve phase ends (passed: the devices were reserved) and
    the parent moves on to its test.
    """
    record = store.fields([parent_id], "reserve_until", "reserve_started", "step_reserve")[0]
    if not record["reserve_until"] or record["step_reserve"] or not store.mark_done(parent_id, ParentStep.RESERVE):
        return False
    if why is None:
        held = float(record["reserve_until"]) - float(record["reserve_started"] or record["reserve_until"])
        why = f"reservation timed out after {held:.0f} seconds"
    clear_timers(store.client, Timer.RESERVATION, [parent_id])
    run = _phase(None, store, parent_id, Phase.RESERVE)
    run.out(why)
    run.end(0)
    advance(store, parent_id)
    return True


def stop_overdue_test(store: JobStore, job_id: str) -> bool:
    """The job's global deadline passed and its test still runs with nobody stopping it: stop the test.

    The job goes on to its cleanup and fails (its test was stopped), as when the runner stops it itself.
    """
    if store.fields([job_id], "state")[0]["state"] != JobState.TEST:
        return False
    _phase(None, store, job_id, Phase.TEST).out("*** global_timeout reached and the test still runs; stopping it ***")
    store.signal(job_id, Signal.TIMEOUT)
    return True


def extend_reservation(store: JobStore, parent_id: str, seconds: float, settings: Settings) -> float:
    """Move the reservation's deadline ``seconds`` later; the new expiry (epoch seconds).

    Refused (:class:`ConvoyError`, naming the limit) when the job holds no reservation now, or when the
    whole reservation would exceed this deployment's maximum (``CONVOY_MAX_RESERVATION``).
    """
    record = store.fields([parent_id], "state", "reserve_until", "reserve_started", "step_reserve")[0]
    if record["state"] is None:
        raise JobNotFound(parent_id)
    if not record["reserve_until"] or record["step_reserve"]:
        raise ConvoyError(f"job {parent_id} holds no reservation now (it is {record['state']})")
    started, until = float(record["reserve_started"]), float(record["reserve_until"])
    new_until = until + seconds
    if new_until - started > settings.max_reservation:
        left = max(0.0, settings.max_reservation - (until - started))
        raise ConvoyError(
            f"cannot extend the reservation of job {parent_id} by {seconds:g}s: a reservation lasts at most "
            f"{settings.max_reservation:g}s here (CONVOY_MAX_RESERVATION); it can grow by {left:.0f}s more")
    with store.pipeline() as pipe:
        store.set_fields(parent_id, pipe, reserve_until=f"{new_until:.3f}")
        set_timer(pipe, Timer.RESERVATION, parent_id, new_until)
        pipe.execute()
    expires = datetime.fromtimestamp(new_until, UTC).isoformat(timespec="seconds")
    _phase(None, store, parent_id, Phase.RESERVE).out(f"reservation extended by {seconds:g}s: now expires at {expires}")
    return new_until


@app.task(bind=True, name=canvas.TEST, acks_late=True)
def test(self: Task, parent_id: str) -> None:
    """Run the parent's test_cmds here and every child's on its device, together."""
    def body(store: JobStore) -> bool:
        started = (store.phases(parent_id).get(Phase.TEST) or {})
        run = _phase(self, store, parent_id, Phase.TEST)
        if "started" in started and "ended" not in started:
            _resume_test(store, parent_id, run)
        else:
            _test(store, parent_id, run)
        return True

    run_step(parent_id, ParentStep.TEST, body)


def _test(store: JobStore, parent_id: str, run: PhaseRun) -> None:
    job = store.get(parent_id, with_secrets=True)["document"]  # its commands get the secrets
    test_data = job.get("test_data") or {}
    if (store.phases(parent_id).get(Phase.RESERVE) or {}).get("status", 0) != 0:
        run.out("reserve phase failed; skipping the test phase")
        return
    children = [store.get(cid) for cid in store.children(parent_id)]
    guests = [c["job_id"] for c in children if is_guest(c["document"])]
    testing = _testing_children(children)
    if not test_data.get("test_cmds") and not testing and not guests:
        return
    run.transition(JobState.TEST)
    run.start()
    if test_data.get("test_cmds") or guests:
        try:  # every device trusts the parent's key before its commands or guests reach them
            parent_key(store, parent_id, parent_dir(parent_id), run.out)
        except ConvoyError as exc:
            run.out(f"*** {exc}; the test phase fails ***")
            run.end(1)
            return
    for cid in testing:
        store.signal(cid, Signal.TEST)
    status = 0
    deadline = test_deadline(store, parent_id, job)
    with ControlWatcher(store.client, parent_id) as control:
        guest_runs = [start_guest(store, parent_id, gid, control.cancel_event) for gid in guests]
        if test_data.get("test_cmds"):
            env = parent_test_env(store, parent_id, job, out=run.out)
            with relay_env(store.client, parent_dir(parent_id), group_id=parent_id, job_id=parent_id, role=None,
                           timeout=multinode_timeout(job), cancel=control.stop_test_event) as relay:
                status = run_script(test_data["test_cmds"], cwd=parent_dir(parent_id), env={**env, **relay},
                                    on_output=run.write, cancel=control.stop_test_event,
                                    timeout=remaining(deadline), timeout_limit=job.get("global_timeout"),
                                    output_timeout=job.get("output_timeout"),
                                    private_files=multinode_files(parent_dir(parent_id), env), job=parent_id,
                                    on_start=lambda pid: store.set_fields(parent_id, script_pgid=pid,
                                                                          script_host=socket.gethostname()))
            store.set_fields(parent_id, script_pgid="")  # ended: nothing for a re-run to stop
            # what test_cmds left in artifacts/ of their cwd (the parent's directory on this coordinator)
            upload_artifacts(store, parent_id, parent_dir(parent_id), load_settings().max_artifact_bytes, run.out)
        if testing:
            status = max(status, _wait_children_tests(store, testing, deadline, run.out))
        for gid, guest in zip(guests, guest_runs):
            guest.join()
            code = (store.phases(gid).get(Phase.TEST) or {}).get("status", 1)
            if code != 0:
                run.out(f"guest {gid}: test_cmds exited {code}")
                status = max(status, 1)
    run.end(status)


def _testing_children(children: list[dict[str, Any]]) -> list[str]:
    return [c["job_id"] for c in children if not is_guest(c["document"])
            and any((c["document"].get("test_data") or {}).get(k) for k in ("test_cmds", "lava_tests"))]


def _resume_test(store: JobStore, parent_id: str, run: PhaseRun) -> None:
    """The test step again, after the coordinator running it died.

    The parent's own test commands (and its guests') died with that coordinator, or are stopped now:
    the phase fails naming it.  A test that only waited for the children's waits for them again.
    """
    record = store.get(parent_id)
    dead = record.get("step_died") or "its lease ran out"
    why = f"coordinator died ({dead}) while the parent's test phase ran"
    status = 0
    if record.get("script_pgid"):
        if record.get("script_host") == socket.gethostname() and kill_process_group(int(record["script_pgid"])):
            run.out("*** ended the test commands the dead coordinator left running ***")
        store.set_fields(parent_id, script_pgid="")
        status = 1
    children = [store.get(cid) for cid in store.children(parent_id)]
    for guest in (c for c in children if is_guest(c["document"]) and c["state"] not in FINAL_STATES):
        guest_run = PhaseRun(store, guest["job_id"], Phase.TEST)
        guest_run.out(f"*** {why} ***")
        guest_run.end(1)
        guest_run.conclude(JobState.CANCELLED, outcome=Outcome.FAIL, message=why)
        status = 1
    if status:
        run.out(f"*** {why}: the test fails ***")
    testing = _testing_children(children)
    if testing:
        run.out(f"(the coordinator running the test died ({dead}); waiting for the children's tests again)")
        deadline = test_deadline(store, parent_id, record["document"])  # the first start's, not a new one
        status = max(status, _wait_children_tests(store, testing, deadline, run.out))
    run.end(status)


def _wait_children_tests(store: JobStore, children: list[str], deadline: float | None,
                         out: Callable[[str], None]) -> int:
    """Wait for every child's test (until the parent's global deadline); a child that ended meanwhile
    (its device died) stops the others'."""
    def test_ended(cid: str) -> bool:
        phase = store.phases(cid).get(Phase.TEST) or {}
        return "ended" in phase or store.state(cid) in FINAL_STATES

    def gone() -> list[str]:
        return [c for c in children if store.state(c) in FINAL_STATES]

    store.wait_until(children, lambda: all(test_ended(c) for c in children) or bool(gone()), remaining(deadline))
    # the others' MultiNode waits on the gone member fail by themselves (with LAVA's message): a moment for
    # that, then whatever still runs (a test that does not wait on the group) is stopped
    grace = min(STOP_OTHERS_GRACE_SECONDS, remaining(deadline) or STOP_OTHERS_GRACE_SECONDS)
    if (ended := gone()) and not store.wait_until(children, lambda: all(test_ended(c) for c in children), grace):
        for cid in ended:
            out(f"child {cid} ended during the test: {store.fields([cid], 'message')[0]['message'] or 'ended'}; "
                "stopping the other children's tests")
        for cid in children:
            if not test_ended(cid):
                store.signal(cid, Signal.CANCEL)
        store.wait_until(children, lambda: all(test_ended(c) for c in children), remaining(deadline))
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


@app.task(bind=True, name=canvas.CLEANUP, acks_late=True)
def cleanup(self: Task, parent_id: str) -> None:
    """Release every child (each cleans its device), then end the parent; safe to run again after a crash."""
    def body(store: JobStore) -> bool:
        _cleanup(self, store, parent_id)
        return True

    run_step(parent_id, ParentStep.CLEANUP, body)


def _cleanup(task: Task, store: JobStore, parent_id: str) -> None:
    end_reservation(store, parent_id, "reservation ended early by cancel")
    _close_open_phases(store, parent_id)
    run = _phase(task, store, parent_id, Phase.CLEANUP)
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
    forget_job_key(parent_dir(parent_id))  # no device trusts it any more
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
    store.parent_ended(parent_id)


def _close_open_phases(store: JobStore, parent_id: str) -> None:
    """A phase a cancel or a crash interrupted (the parent's test, when its coordinator died) ends failed."""
    for name, phase in store.phases(parent_id).items():
        if name != Phase.CLEANUP and "started" in phase and "ended" not in phase:
            _phase(None, store, parent_id, Phase(name)).end(1)


def _finish_group(store: JobStore, parent_id: str) -> None:
    try:
        from convoy.coordinator.multinode.group import expire_group

        expire_group(store.client, parent_id, 24 * 3600)
    except ImportError:  # pragma: no cover - MultiNode is part of convoy
        pass
