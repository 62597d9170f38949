"""Cancellation and aborting a multi job's allocation.

A job that has not started is cancelled on the spot (its task, when a worker
takes it, sees the final state and does nothing).  A running job is sent a
``cancel`` signal: its task stops the current phase and runs cleanup.  An
aborted allocation cancels every child and queues the parent's cleanup once.
"""
from __future__ import annotations

from convoy.config.settings import Settings
from convoy.config.lifecycle import FINAL_STATES, JobState, Outcome, Phase, Signal
from convoy.coordinator.state.jobs import JobStore
from convoy.errors import JobStateError
from convoy.tasks.run.phase import PhaseRun
from convoy.tasks.steps import advance

#: a multi job's states before every device is allocated: a failure or a cancel then aborts the allocation
ALLOCATING = (JobState.WAITING, JobState.PROVISION)
UNABLE_TO_ALLOCATE = "Unable to allocate all devices"
ALLOCATION_TIMED_OUT = "Timed out waiting for devices to allocate"


def cancel_job(store: JobStore, job_id: str, settings: Settings) -> None:
    record = store.get(job_id)
    if record["state"] in FINAL_STATES:
        raise JobStateError(job_id, record["state"], f"job {job_id} is already {record['state']}")
    if record["job_queue"] == "multi":
        cancel_parent(store, job_id, settings)
        return
    cancel_device_job(store, job_id, "cancelled by user")
    parent_id = record.get("parent_job_id")
    if parent_id and store.state(parent_id) in ALLOCATING:
        abort_allocation(store, parent_id, UNABLE_TO_ALLOCATE, settings)


def cancel_device_job(store: JobStore, job_id: str, reason: str) -> None:
    """Cancel a device job, whether it waits in its queue or runs on a device."""
    store.set_fields(job_id, cancel_requested="1", cancel_reason=reason)
    store.signal(job_id, Signal.CANCEL)
    store.transition(job_id, JobState.CANCELLED, allowed_from=[JobState.WAITING], outcome=Outcome.CANCELLED,
                     message=reason)


def cancel_parent(store: JobStore, parent_id: str, settings: Settings) -> None:
    """Cancel a multi job in any state: whatever step runs stops, and its cleanup is owed (and sent)."""
    store.set_fields(parent_id, cancel_requested="1")
    store.signal(parent_id, Signal.CANCEL)
    if store.state(parent_id) in ALLOCATING:
        abort_allocation(store, parent_id, "Job cancelled during allocation", settings)
        return
    # children running test_cmds stop now: the parent's test phase waits for them before its cleanup
    for child_id, state in store.states(store.children(parent_id)).items():
        if state not in FINAL_STATES:
            store.signal(child_id, Signal.CANCEL)
    advance(store, parent_id, settings)  # a reservation holds no thread: its cleanup must be sent


def abort_allocation(store: JobStore, parent_id: str, message: str, settings: Settings) -> bool:
    """Fail a multi job's allocation once: cancel all children, send the cleanup."""
    if not store.once(parent_id, "abort"):
        return False
    store.set_fields(parent_id, message=message)
    provision = PhaseRun(store, parent_id, Phase.PROVISION)  # the parent's provision phase fails with it
    provision.out(message)
    provision.end(1)
    for child_id in store.children(parent_id):
        if store.state(child_id) not in FINAL_STATES:
            cancel_device_job(store, child_id, f"parent job {parent_id}: {message}")
    store.parent_started(parent_id)  # its steps are watched from now: the cleanup is repaired if lost
    advance(store, parent_id, settings)
    return True
