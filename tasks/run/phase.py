"""One phase of one job: its state change, start, output, end, announcement and status.

Every place that runs a phase — a device job on its worker, the parent's
steps on the coordinator, a guest (secondary connection), a recovery after a
worker died — records it the same way through a :class:`PhaseRun`, so a
phase's record in the job store (``started``, ``status``, ``ended``, its
output) and its announcement to Flower never differ by who ran it.

Celery-free: Flower is reached through the ``announce`` callback the Celery
task passes in (``tasks.events.announcer(task)``).  End-of-phase writes wait
out a short Redis outage (:func:`patiently`); output lines do too
(:func:`patient_writer`).  The decisions (which exit code an error gives,
which phase a dead worker interrupted) are pure functions below.
"""
from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable

from convoy.config.lifecycle import JobState, Phase
from convoy.errors import ConvoyError
from convoy.tasks.run.output import patient_writer, patiently

if TYPE_CHECKING:
    from convoy.coordinator.state.jobs import JobStore

log = logging.getLogger(__name__)

#: ``announce(state, **fields)``: tells Flower (the task's custom state and a ``task-<state>`` event)
Announce = Callable[..., None]


def _silent(state: str, **fields: Any) -> None:
    """The announcer of a phase run outside any Celery task (a recovery)."""


# --- pure decisions ------------------------------------------------------------------

def failed(status: int | None) -> bool:
    """Whether a phase that ended with ``status`` failed (a phase that never ended did not)."""
    return status not in (0, None)


def error_report(phase: str, exc: BaseException) -> tuple[int, str]:
    """The exit code and the output line of a phase whose body raised ``exc``.

    A :class:`ConvoyError` is an expected failure and says itself; anything
    else is an internal error (a connector bug), named as such.  Either way
    the phase fails and the job goes on to its cleanup.
    """
    if isinstance(exc, ConvoyError):
        return 1, str(exc)
    return 1, f"internal error in {phase}: {exc!r}"


def interrupted_phase(state: str) -> Phase:
    """The phase a job in ``state`` was running when its worker died.

    ``provision`` and ``test`` are phases of their own; a job that was
    holding its device (``allocated``) or cleaning it is failed in cleanup.
    """
    if state in (JobState.PROVISION, JobState.TEST):
        return Phase(state)
    return Phase.CLEANUP


# --- the bookkeeping -------------------------------------------------------------------

class PhaseRun:
    """The record of one phase of one job, written as the phase runs.

    ``transition`` moves the job's state (through the store's lifecycle
    table), ``start`` records and announces the phase, ``out`` writes lines
    to its output, ``end`` records its exit code, ``run`` does start → body →
    end with the body's errors turned into a failed phase, and ``conclude``
    ends the whole job from its last phase with its outcome.
    """

    def __init__(self, store: "JobStore", job_id: str, phase: Phase | str, *,
                 announce: Announce | None = None) -> None:
        self.store = store
        self.job_id = job_id
        self.phase = Phase(phase)
        self._announce = announce or _silent
        #: lines to the phase's output; a Redis restart delays them (in order), never drops them silently
        self.out: Callable[[str], None] = patient_writer(store, job_id, self.phase)
        #: a script's output exactly as printed, for ``run_script``: its forwarder retries and buffers,
        #: and a chunk that ends mid-line must not get a line break of its own
        self.write: Callable[[str], None] = functools.partial(store.append_output, job_id, self.phase)
        #: the exit code once the phase ended (None while it runs or if it never started)
        self.status: int | None = None

    @property
    def failed(self) -> bool:
        return failed(self.status)

    def transition(self, state: JobState, *, allowed_from: Iterable[JobState] = (), **fields: Any) -> bool:
        """Move the job to ``state`` if the lifecycle allows it; whether it moved."""
        changed, _previous = self.store.transition(self.job_id, state, allowed_from=allowed_from, **fields)
        return changed

    def start(self, *, announce: bool = True) -> None:
        """Record the phase's start and (unless told not to) announce it as the task's state."""
        self.store.start_phase(self.job_id, self.phase)
        if announce:
            self.announce(self.phase)

    def end(self, status: int) -> int:
        """Record the phase's exit code; a Redis restart delays this, never strands the phase."""
        self.status = int(status)
        patiently(self.store.end_phase, self.job_id, self.phase, self.status)
        return self.status

    def run(self, body: Callable[[], int]) -> int:
        """Start the phase, run ``body`` (its exit code), end the phase; a raising body fails it."""
        self.start()
        try:
            status = body()
        except Exception as exc:  # a connector bug must not leave the device held
            if not isinstance(exc, ConvoyError):
                log.exception("phase %s of job %s failed", self.phase, self.job_id)
            status, line = error_report(self.phase, exc)
            self.out(line)
        return self.end(status)

    def announce(self, state: str, **fields: Any) -> None:
        """Tell Flower ``state`` (a phase, a job state, or a custom one: ``reserved``)."""
        self._announce(state, **fields)

    def conclude(self, final: JobState, **fields: Any) -> bool:
        """End the job from this, its last phase: move it to ``final`` (with its outcome) and announce it."""
        changed, _previous = patiently(self.store.transition, self.job_id, final, **fields)
        self.announce(final)
        return changed
