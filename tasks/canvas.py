"""The Celery canvas of a job: what gets queued where, once the scheduler has chosen its devices.

Every device has its own queue (:func:`device_queue`), consumed by its one
worker: the scheduler assigns devices first, then publishes each device's
task to that device's queue, so no other worker can take it.  A
single-device job is one task.  A multi job is a chord: one child task per
device (each returns its device_info the moment its device is allocated),
then the parent's collect on the coordinator queue; each later step of the
parent is sent by whoever finds it owed (:func:`parent_step`).  The order jobs start in is the scheduler's, not the
broker's: messages carry no priority.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from celery import Celery, chord
from celery.canvas import Signature
from celery.signals import before_task_publish

from convoy.config.settings import Settings

RUN_JOB = "convoy.device.run_job"
CHILD_JOB = "convoy.device.child_job"
COLLECT = "convoy.parent.collect"
RESERVE = "convoy.parent.reserve"
TEST = "convoy.parent.test"
CLEANUP = "convoy.parent.cleanup"
#: the prefix of every device's own queue
DEVICE_QUEUE_PREFIX = "convoy.device."


#: convoy keeps results in its own job store; the chord counts parts through the
#: backend's chord hook, which works without stored results.  Ignoring results
#: also spares the submitting process a result subscription per task.
NO_RESULT = {"ignore_result": True}


def device_queue(device: str) -> str:
    """The queue only ``device``'s worker consumes."""
    return DEVICE_QUEUE_PREFIX + device


def single_job(app: Celery, job_id: str, device: str) -> Signature:
    return app.signature(RUN_JOB, args=(job_id,), queue=device_queue(device), task_id=job_id, **NO_RESULT)


#: each parent step's task (see :mod:`convoy.config.steps`)
STEP_TASKS = {"collect": COLLECT, "reserve": RESERVE, "test": TEST, "cleanup": CLEANUP}


def parent_body(app: Celery, parent_id: str, settings: Settings) -> Signature:
    """The chord's body: collect, the moment the last child is allocated; each step then sends the next."""
    return app.signature(COLLECT, args=(parent_id,), queue=settings.coordinator_queue,
                         task_id=f"{parent_id}.collect", **NO_RESULT)


def parent_step(app: Celery, parent_id: str, step: str, settings: Settings) -> Signature:
    """One step of the parent, sent by whoever found it owed (the step before, a cancel, a deadline, a repair).

    Collect sent this way (not by the chord) has no allocation reports: it reads the store.
    """
    args: tuple[Any, ...] = (None, parent_id) if step == "collect" else (parent_id,)
    return app.signature(STEP_TASKS[step], args=args, queue=settings.coordinator_queue,
                         task_id=f"{parent_id}.{step}", **NO_RESULT)


def multi_job(app: Celery, parent_id: str, devices: Mapping[str, str], settings: Settings) -> Signature:
    """The chord of a multi job: each child (id → its assigned device, in ``provision_data.jobs`` order) on
    its device's queue, then the parent's collect.  Secondary connections hold no device: no task here."""
    header = [app.signature(CHILD_JOB, args=(child_id,), queue=device_queue(device), task_id=child_id, **NO_RESULT)
              for child_id, device in devices.items()]
    return chord(header, parent_body(app, parent_id, settings))


def child_again(app: Celery, child_id: str, device: str, part: Mapping[str, Any]) -> Signature:
    """A child's task for a new device (its first went offline before starting), in its chord's place.

    ``part`` is the chord membership its first message carried (see :func:`chord_parts`), so the
    chord still counts it.
    """
    return app.signature(CHILD_JOB, args=(child_id,), queue=device_queue(device), task_id=child_id,
                         group_id=part.get("group_id"), group_index=part.get("group_index"),
                         chord=part.get("chord"), **NO_RESULT)


_recording = threading.local()

#: ``record(child id, part)``: keeps a child's chord membership before its message is sent
RecordPart = Callable[[str, dict[str, Any]], None]


@before_task_publish.connect
def _record_chord_part(sender: str | None = None, headers: dict[str, Any] | None = None, body: Any = None,
                       **_: Any) -> None:
    record: RecordPart | None = getattr(_recording, "record", None)
    if record is None or sender != CHILD_JOB or not headers:
        return
    embed = body[2] if isinstance(body, (list, tuple)) and len(body) == 3 and isinstance(body[2], dict) else {}
    record(headers["id"], {"group_id": headers.get("group"), "group_index": headers.get("group_index"),
                           "chord": embed.get("chord")})


@contextmanager
def chord_parts(record: RecordPart) -> Iterator[None]:
    """Call ``record(child id, part)`` for each child message this thread publishes meanwhile, before it
    is sent: a publisher that dies half-way leaves the membership of every child it sent, or was
    about to send, behind (see :func:`sibling_part`)."""
    _recording.record = record
    try:
        yield
    finally:
        _recording.record = None


def sibling_part(part: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The chord membership of the header's ``index``-th child, from another child's of the same chord."""
    return {"group_id": part.get("group_id"), "group_index": index, "chord": part.get("chord")}


def job_list(reports: list[Any] | None,
             stored: Callable[[], list[tuple[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The entries of ``job_list.json``: ``[{"job_id", "device_info"}]`` in ``provision_data.jobs`` order.

    ``reports`` are the chord header's results, each child's allocation report
    (the very data job_list.json holds, in header order).  Should any result
    not be such a report, ``stored()`` gives the (child id, device_info) pairs
    from the job store instead: the file is never partial.  ``None`` (a collect sent again after a
    crash, without the chord's results) reads the store too.
    """
    entries = [{"job_id": r["job_id"], "device_info": r.get("device_info") or {}}
               for r in reports or () if isinstance(r, dict) and "job_id" in r]
    if reports is None or len(entries) != len(reports):
        entries = [{"job_id": job_id, "device_info": info} for job_id, info in stored()]
    return entries
