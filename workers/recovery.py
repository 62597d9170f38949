"""What a device worker does at start when its previous process died holding a job.

The job it held cannot go on (its processes died with the worker), so it is
ended with a clear message, its device is cleaned and released, and — for a
child of a multi job — the parent's allocation is aborted or the MultiNode
group is told that this member failed.
"""
from __future__ import annotations

import logging

from convoy.config.settings import load_settings
from convoy.tasks.cancel import ALLOCATING, UNABLE_TO_ALLOCATE, abort_allocation
from convoy.config.lifecycle import FINAL_STATES, JobState, Outcome, Phase
from convoy.coordinator.state.jobs import JobStore
from convoy.errors import JobNotFound
from convoy.tasks.run.runtime import DeviceRuntime
from convoy.coordinator.state.devices import holder, release_device
from convoy.tasks.run.phase import PhaseRun, interrupted_phase
from convoy.tasks.run.script import kill_process_group

log = logging.getLogger(__name__)


def recover_device(store: JobStore, runtime: DeviceRuntime) -> str | None:
    """End the job this device held when its worker died; return its id, if any."""
    job_id = holder(store.client, runtime.name)
    if not job_id:
        return None
    try:
        record = store.get(job_id)
    except JobNotFound:
        release_device(store.client, runtime.name, job_id)
        return None
    if record["state"] in FINAL_STATES:
        release_device(store.client, runtime.name, job_id)
        return None
    if record["state"] == JobState.WAITING:  # assigned, not started: its message waits in this device's queue
        return None
    message = f"device worker for {runtime.name} died during {record['state']}"
    if record.get("script_pgid") and kill_process_group(int(record["script_pgid"])):
        PhaseRun(store, job_id, Phase.TEST).out("*** ended the test commands the dead worker left running ***")
    interrupted = PhaseRun(store, job_id, interrupted_phase(record["state"]))  # no task: nothing to announce
    interrupted.out(f"*** {message} ***")
    interrupted.end(1)
    cleanup = PhaseRun(store, job_id, Phase.CLEANUP)
    cleanup.start()
    try:
        runtime.connector.cleanup(cleanup.out)
        cleanup.end(0)
    except Exception as exc:  # cleaning is best effort; the device is released either way
        cleanup.out(f"cleanup failed: {exc}")
        cleanup.end(1)
    parent_id = record.get("parent_job_id")
    # a child always ends cancelled (how Testflinger releases a device), a single job complete
    cleanup.conclude(JobState.CANCELLED if parent_id else JobState.COMPLETE, outcome=Outcome.FAIL, message=message)
    if parent_id:
        if store.state(parent_id) in ALLOCATING:
            abort_allocation(store, parent_id, UNABLE_TO_ALLOCATE, load_settings())
        else:
            from convoy.coordinator.multinode.group import fail_member

            fail_member(store.client, parent_id, job_id, message)
    release_device(store.client, runtime.name, job_id)
    log.warning("%s; job %s ended", message, job_id)
    return job_id
