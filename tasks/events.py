"""Task states Flower can show: custom states as task events, and the chord report.

Each phase is announced twice: stored as the task's state in the result
backend (``update_state``) and sent as a ``task-<phase>`` event, which Flower
records as the task's state (its name upper-cased: ``ALLOCATED``, ...).
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Any, Callable

from celery import Task

from convoy.config.lifecycle import JobState

log = logging.getLogger(__name__)


def announce(task: Task, state: str, **fields: Any) -> None:
    """Publish ``state`` for this task (backend + event); never fails the job."""
    if task.request.called_directly:
        return
    name = str(state)  # a JobState or Phase travels as its plain name
    try:
        task.update_state(state=name.upper(), meta={"phase": name, **fields})
        task.send_event(f"task-{name}", phase=name, **fields)
    except Exception:  # monitoring must never break a job
        log.debug("could not announce state %s", state, exc_info=True)


def announcer(task: Task) -> Callable[..., None]:
    """``announce`` bound to ``task``: what a :class:`~convoy.tasks.run.phase.PhaseRun` calls to tell Flower."""
    return partial(announce, task)


def report_allocated(task: Task, result: dict[str, Any]) -> None:
    """Count this child towards its parent's chord now, while the task goes on holding.

    The chord's body (the parent's collect) must run the moment the last
    device is allocated, but a child's task only ends at cleanup.  So the
    child stores its result and triggers the chord part itself, then clears
    ``request.chord`` so that the task's real end does not count twice.
    """
    request = task.request
    if request.chord:
        task.backend.mark_as_done(request.id, result, request=request)
        request.chord = None
    announce(task, JobState.ALLOCATED, device_info=result.get("device_info", {}))
