"""The job lifecycle: states, phases, control signals, outcomes and the one table of allowed transitions.

States follow Testflinger's words, so a Testflinger user reads them as they
always have. The job store's atomic transition consults
:data:`TRANSITIONS`, so no code path can move a job backwards (out of
``cleanup``) or out of a final state, whoever calls it.
"""
from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    WAITING = "waiting"
    PROVISION = "provision"
    ALLOCATED = "allocated"
    RESERVE = "reserve"
    TEST = "test"
    CLEANUP = "cleanup"
    COMPLETE = "complete"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    """The phases whose status and output a job records, in the order they run."""

    PROVISION = "provision"
    ALLOCATE = "allocate"
    RESERVE = "reserve"
    TEST = "test"
    CLEANUP = "cleanup"


class Signal(StrEnum):
    """What a job's running task can be told through its control stream."""

    CANCEL = "cancel"
    TEST = "test"
    RELEASE = "release"
    START = "start"
    #: the job's global_timeout ran out and its runner did not stop it: stop the test, not the job
    TIMEOUT = "timeout"
    #: a holding child: have the device trust the parent's published SSH key (tasks/run/jobkeys.py)
    AUTHORIZE = "authorize"


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    CANCELLED = "cancelled"


STATES: tuple[JobState, ...] = tuple(JobState)
PHASES: tuple[Phase, ...] = tuple(Phase)
FINAL_STATES: frozenset[JobState] = frozenset({JobState.COMPLETE, JobState.CANCELLED})
ACTIVE_STATES: frozenset[JobState] = frozenset(JobState) - FINAL_STATES

#: for each state, the states a job may enter it from (final states are never left)
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset(),
    # a device's worker starts the job (or the scheduler, for a multi job's parent)
    JobState.PROVISION: frozenset({JobState.WAITING}),
    # every device of a multi job is allocated; a child goes back to holding after its test
    JobState.ALLOCATED: frozenset({JobState.PROVISION, JobState.TEST}),
    JobState.RESERVE: frozenset({JobState.ALLOCATED}),
    # a guest (no device) starts in test; a single job after provision; a multi job after allocation
    JobState.TEST: frozenset({JobState.WAITING, JobState.PROVISION, JobState.ALLOCATED, JobState.RESERVE,
                              JobState.TEST}),
    # cleanup, and the end, may come from anywhere a job is still alive: failures and cancels are normal
    JobState.CLEANUP: ACTIVE_STATES,
    JobState.COMPLETE: ACTIVE_STATES,
    JobState.CANCELLED: ACTIVE_STATES,
}


def may_transition(current: str, to: str) -> bool:
    """Whether a job in state ``current`` may move to ``to`` (both plain names or enums)."""
    return JobState(current) in TRANSITIONS[JobState(to)]


def is_final(state: str | None) -> bool:
    return state in FINAL_STATES
