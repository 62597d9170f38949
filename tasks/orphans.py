"""Ending a job whose device worker died: from its restarted worker, or from the scheduler.

A device job's processes die with its worker, so the job cannot go on: it
ends naming the device and the phase it died in, its MultiNode group is told
(or, before every device was allocated, its parent's allocation is aborted),
and the device is cleaned — at once by the restarted worker, which has the
device's connector, or when its worker is back if the scheduler noticed the
death first (a supervisor killed with its workers): the device stays held by
the ended job until then, so nothing else is put on a dirty device.
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from convoy.config.lifecycle import FINAL_STATES, JobState, Outcome, Phase
from convoy.config.settings import load_settings
from convoy.coordinator.state.devices import release_device
from convoy.coordinator.state.jobs import JobStore
from convoy.tasks.cancel import ALLOCATING, UNABLE_TO_ALLOCATE, abort_allocation
from convoy.tasks.run.phase import PhaseRun, interrupted_phase
from convoy.tasks.run.script import kill_process_group

log = logging.getLogger(__name__)

#: cleans the device, writing to the job's cleanup output
Clean = Callable[[Callable[[str], None]], None]


def died_message(device: str, state: str) -> str:
    return f"device worker for {device} died during {state}"


def end_orphaned_job(store: JobStore, job_id: str, record: dict[str, Any], device: str,
                     clean: Clean | None) -> bool:
    """End ``job_id``, whose worker on ``device`` died; False if it was already ended so (once per job).

    With ``clean`` (the device's restarted worker) the device is cleaned and released; without, it
    stays held by the ended job until :func:`clean_after_death` runs on its worker.
    """
    if record["state"] in FINAL_STATES or not store.once(job_id, "orphaned"):
        return False
    message = died_message(device, record["state"])
    if record.get("script_pgid") and record.get("host") == socket.gethostname() \
            and kill_process_group(int(record["script_pgid"])):
        PhaseRun(store, job_id, Phase.TEST).out("*** ended the test commands the dead worker left running ***")
    interrupted = PhaseRun(store, job_id, interrupted_phase(record["state"]))  # no task: nothing to announce
    interrupted.out(f"*** {message} ***")
    interrupted.end(1)
    cleanup = PhaseRun(store, job_id, Phase.CLEANUP)
    cleanup.start()
    if clean is not None:  # cleaned and released before the job ends, as a live worker does
        _clean(cleanup, clean)
        release_device(store.client, device, job_id)
    else:
        cleanup.out(f"device {device} is cleaned when its worker is back")
        cleanup.end(1)
    parent_id = record.get("parent_job_id")
    if parent_id and store.state(parent_id) not in ALLOCATING:
        from convoy.coordinator.multinode.group import fail_member

        # the group first: its members' MultiNode waits fail now, naming this member, before anything
        # watching for the job's end (the parent's test) reacts to it
        fail_member(store.client, parent_id, job_id, message)
    # a child always ends cancelled (how Testflinger releases a device), a single job complete
    cleanup.conclude(JobState.CANCELLED if parent_id else JobState.COMPLETE, outcome=Outcome.FAIL, message=message)
    if parent_id and store.state(parent_id) in ALLOCATING:
        abort_allocation(store, parent_id, UNABLE_TO_ALLOCATE, load_settings())
    log.warning("%s; job %s ended", message, job_id)
    return True


def clean_after_death(store: JobStore, job_id: str, device: str, clean: Clean) -> None:
    """Clean a device still held by a job that ended while its worker was dead, then release it."""
    cleanup = PhaseRun(store, job_id, Phase.CLEANUP)
    cleanup.out(f"device {device}: its worker is back; cleaning it")
    _clean(cleanup, clean)
    release_device(store.client, device, job_id)


def _clean(cleanup: PhaseRun, clean: Clean) -> None:
    try:
        clean(cleanup.out)
        cleanup.end(0)
    except Exception as exc:  # noqa: BLE001  (cleaning is best effort; the device is released either way)
        cleanup.out(f"cleanup failed: {exc}")
        cleanup.end(1)
