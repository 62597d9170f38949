"""The parent's steps, and which one a multi job owes next: one pure decision for every path.

A multi job's parent runs on the coordinator as short steps — collect,
reserve, test, cleanup — each a Celery task that any coordinator may run.
Which step is owed follows from what the job store recorded (:class:`ParentFacts`), never
from which message happens to be in flight: the step that just ended, a
cancel, a reservation's end, and the scheduler repairing after a dead
coordinator all ask :func:`owed_step` and publish what it says.  A step that
runs twice (a duplicate message, a re-run after its coordinator died) finds
itself no longer owed, or resumes from the record.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from convoy.config.lifecycle import FINAL_STATES, JobState


class ParentStep(StrEnum):
    COLLECT = "collect"
    RESERVE = "reserve"
    TEST = "test"
    CLEANUP = "cleanup"


STEPS: tuple[ParentStep, ...] = tuple(ParentStep)


@dataclass(frozen=True)
class ParentFacts:
    """What the store says about a parent, as :func:`owed_step` needs it."""

    state: str
    #: steps that finished (a reservation counts once it ended)
    done: frozenset[str] = frozenset()
    #: a user cancel or an aborted allocation: only cleanup is left
    stopping: bool = False
    #: every child with a device is allocated (the chord's condition for collect)
    children_allocated: bool = False
    reserve: bool = False
    #: the reservation is set up and holds its devices until its deadline
    holding: bool = False


def owed_step(facts: ParentFacts) -> ParentStep | None:
    """The step the parent should run now (None: nothing, or the scheduler's or a deadline's turn)."""
    if facts.state in FINAL_STATES:
        return None
    if facts.stopping or facts.state == JobState.CLEANUP:
        return None if ParentStep.CLEANUP in facts.done else ParentStep.CLEANUP
    if facts.state == JobState.WAITING:
        return None  # the scheduler's turn
    if ParentStep.COLLECT not in facts.done:
        return ParentStep.COLLECT if facts.children_allocated else None
    if facts.reserve and ParentStep.RESERVE not in facts.done:
        return None if facts.holding else ParentStep.RESERVE
    for step in (ParentStep.TEST, ParentStep.CLEANUP):
        if step not in facts.done:
            return step
    return None
