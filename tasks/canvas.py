"""The Celery canvas of a job: what gets queued where.

A single-device job is one task on its queue.  A multi job is a chord: one
child task per device on the child's queue (each returns its device_info
the moment its device is allocated), then the parent's collect → reserve →
test → cleanup chain on the coordinator queue.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, chain, chord
from celery.canvas import Signature

from convoy.config.jobs import GUEST_QUEUE, is_guest
from convoy.config.settings import Settings

#: the queue name recorded for a secondary-connection child, which needs no device

RUN_JOB = "convoy.device.run_job"
CHILD_JOB = "convoy.device.child_job"
COLLECT = "convoy.parent.collect"
RESERVE = "convoy.parent.reserve"
TEST = "convoy.parent.test"
CLEANUP = "convoy.parent.cleanup"
ALLOCATION_TIMEOUT = "convoy.parent.allocation_timeout"


#: convoy keeps results in its own job store; the chord counts parts through the
#: backend's chord hook, which works without stored results.  Ignoring results
#: also spares the submitting process a result subscription per task.
NO_RESULT = {"ignore_result": True}


def _priority(job: dict[str, Any]) -> dict[str, Any]:
    return {"priority": job["job_priority"], **NO_RESULT} if "job_priority" in job else dict(NO_RESULT)


def single_job(app: Celery, job_id: str, job: dict[str, Any]) -> Signature:
    return app.signature(RUN_JOB, args=(job_id,), queue=job["job_queue"], task_id=job_id,
                         **_priority(job))


def parent_body(app: Celery, parent_id: str, settings: Settings) -> Signature:
    queue = settings.coordinator_queue
    return chain(
        app.signature(COLLECT, args=(parent_id,), queue=queue, task_id=f"{parent_id}.collect", **NO_RESULT),
        app.signature(RESERVE, args=(parent_id,), queue=queue, immutable=True, task_id=f"{parent_id}.reserve",
                      **NO_RESULT),
        app.signature(TEST, args=(parent_id,), queue=queue, immutable=True, task_id=f"{parent_id}.test",
                      **NO_RESULT),
        app.signature(CLEANUP, args=(parent_id,), queue=queue, immutable=True, task_id=f"{parent_id}.cleanup",
                      **NO_RESULT),
    )


def multi_job(app: Celery, parent_id: str, job: dict[str, Any], child_ids: list[str],
              settings: Settings) -> Signature:
    header = [
        app.signature(CHILD_JOB, args=(child_id,), queue=child["job_queue"], task_id=child_id,
                      **_priority(job))
        for child_id, child in zip(child_ids, job["provision_data"]["jobs"])
        if not is_guest(child)  # secondary connections hold no device
    ]
    return chord(header, parent_body(app, parent_id, settings))


def allocation_timeout(app: Celery, parent_id: str, seconds: float, settings: Settings) -> Signature:
    return app.signature(ALLOCATION_TIMEOUT, args=(parent_id,), queue=settings.coordinator_queue,
                         countdown=seconds, task_id=f"{parent_id}.allocation-timeout", **NO_RESULT)


def cleanup_now(app: Celery, parent_id: str, settings: Settings) -> Signature:
    """The parent's cleanup, queued directly when allocation is aborted."""
    return app.signature(CLEANUP, args=(parent_id,), queue=settings.coordinator_queue,
                         task_id=f"{parent_id}.cleanup-abort", **NO_RESULT)


def job_list(reports: list[Any], stored: Callable[[], list[tuple[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The entries of ``job_list.json``: ``[{"job_id", "device_info"}]`` in ``provision_data.jobs`` order.

    ``reports`` are the chord header's results, each child's allocation report
    (the very data job_list.json holds, in header order).  Should any result
    not be such a report, ``stored()`` gives the (child id, device_info) pairs
    from the job store instead: the file is never partial.
    """
    entries = [{"job_id": r["job_id"], "device_info": r.get("device_info") or {}}
               for r in reports if isinstance(r, dict) and "job_id" in r]
    if len(entries) != len(reports):
        entries = [{"job_id": job_id, "device_info": info} for job_id, info in stored()]
    return entries
