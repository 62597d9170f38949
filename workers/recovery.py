"""What a device worker does at start when its previous process died holding a job.

The job it held cannot go on (its processes died with the worker), so it is
ended with a clear message, its device is cleaned and released, and — for a
child of a multi job — the parent's allocation is aborted or the MultiNode
group is told that this member failed.
"""
from __future__ import annotations

import logging

from convoy.config.settings import load_settings
from convoy.coordinator.state import keys
from convoy.tasks.cancel import ALLOCATING, UNABLE_TO_ALLOCATE, abort_allocation
from convoy.config.lifecycle import FINAL_STATES
from convoy.coordinator.state.jobs import JobStore
from convoy.errors import JobNotFound
from convoy.tasks.run.runtime import DeviceRuntime
from convoy.coordinator.state.devices import release_device
from convoy.tasks.run.script import kill_process_group

log = logging.getLogger(__name__)


def recover_device(store: JobStore, runtime: DeviceRuntime) -> str | None:
    """End the job this device held when its worker died; return its id, if any."""
    job_id = store.r.hget(keys.device(runtime.name), "job_id")
    if not job_id:
        return None
    try:
        record = store.get(job_id)
    except JobNotFound:
        release_device(store.r, runtime.name, job_id)
        return None
    if record["state"] in FINAL_STATES:
        release_device(store.r, runtime.name, job_id)
        return None
    message = f"device worker for {runtime.name} died during {record['state']}"
    if record.get("script_pgid") and kill_process_group(int(record["script_pgid"])):
        store.append_output(job_id, "test", "*** ended the test commands the dead worker left running ***\n")
    phase = record["state"] if record["state"] in ("provision", "test") else "cleanup"
    store.append_output(job_id, phase, f"*** {message} ***\n")
    store.end_phase(job_id, phase, 1)
    store.start_phase(job_id, "cleanup")
    try:
        runtime.connector.cleanup(lambda text: store.append_output(job_id, "cleanup", text + "\n"))
        store.end_phase(job_id, "cleanup", 0)
    except Exception as exc:  # cleaning is best effort; the device is released either way
        store.append_output(job_id, "cleanup", f"cleanup failed: {exc}\n")
        store.end_phase(job_id, "cleanup", 1)
    parent_id = record.get("parent_job_id")
    store.transition(job_id, "cancelled" if parent_id else "complete", outcome="fail", message=message)
    if parent_id:
        if store.state(parent_id) in ALLOCATING:
            abort_allocation(store, parent_id, UNABLE_TO_ALLOCATE, load_settings())
        else:
            from convoy.coordinator.multinode.group import fail_member

            fail_member(store.r, parent_id, job_id, message)
    release_device(store.r, runtime.name, job_id)
    log.warning("%s; job %s ended", message, job_id)
    return job_id
