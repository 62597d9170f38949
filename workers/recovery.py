"""What a device worker does at start when its previous process died holding a job.

The job it held cannot go on (its processes died with the worker), so it is
ended with a clear message and its device is cleaned and released
(:mod:`convoy.tasks.orphans`).  If the scheduler ended the job first (the
worker stayed dead a while), the device is only cleaned and released.
"""
from __future__ import annotations

import logging

from convoy.config.lifecycle import FINAL_STATES, JobState
from convoy.coordinator.state.devices import holder, release_device
from convoy.coordinator.state.jobs import JobStore
from convoy.errors import JobNotFound
from convoy.tasks.orphans import clean_after_death, end_orphaned_job
from convoy.tasks.run.runtime import DeviceRuntime

log = logging.getLogger(__name__)


def recover_device(store: JobStore, runtime: DeviceRuntime) -> str | None:
    """End (or finish cleaning after) the job this device held when its worker died; its id, if any."""
    job_id = holder(store.client, runtime.name)
    if not job_id:
        return None
    try:
        record = store.get(job_id)
    except JobNotFound:  # Redis forgot it: nothing to record, but the device may be dirty
        runtime.connector.cleanup(lambda line: log.info("%s: %s", runtime.name, line))
        release_device(store.client, runtime.name, job_id)
        return None
    if record["state"] == JobState.WAITING:  # assigned, not started: its message waits in this device's queue
        return None
    if record["state"] in FINAL_STATES or not end_orphaned_job(store, job_id, record, runtime.name,
                                                               runtime.connector.cleanup):
        # ended (by the scheduler, while this worker was dead) without its device released: clean it now
        clean_after_death(store, job_id, runtime.name, runtime.connector.cleanup)
    return job_id
