"""The job lifecycle: the one table of allowed transitions, read as rows of (from, to, allowed)."""
from __future__ import annotations

from collections import deque

import pytest

from convoy.config.lifecycle import (
    ACTIVE_STATES, FINAL_STATES, TRANSITIONS, JobState, Outcome, Phase, Signal, is_final, may_transition,
)

S = JobState

#: the lifecycle as users see it, row by row
ROWS = [
    (S.WAITING, S.PROVISION, True),      # a worker (or the dispatcher) starts the job
    (S.WAITING, S.TEST, True),           # a guest (no device) starts in test
    (S.WAITING, S.CANCELLED, True),      # cancelled in its queue
    (S.WAITING, S.ALLOCATED, False),     # never allocated without provisioning
    (S.WAITING, S.RESERVE, False),
    (S.PROVISION, S.ALLOCATED, True),
    (S.PROVISION, S.TEST, True),         # a single-device job after provisioning
    (S.PROVISION, S.CLEANUP, True),      # provisioning failed or was cancelled
    (S.PROVISION, S.WAITING, False),     # never back to the queue
    (S.ALLOCATED, S.RESERVE, True),
    (S.ALLOCATED, S.TEST, True),
    (S.ALLOCATED, S.PROVISION, False),
    (S.RESERVE, S.TEST, True),
    (S.RESERVE, S.ALLOCATED, False),
    (S.TEST, S.ALLOCATED, True),         # a child holds its device again after its test_cmds
    (S.TEST, S.TEST, True),
    (S.TEST, S.RESERVE, False),
    (S.TEST, S.CLEANUP, True),
    (S.CLEANUP, S.TEST, False),          # cleanup never goes back
    (S.CLEANUP, S.ALLOCATED, False),
    (S.CLEANUP, S.PROVISION, False),
    (S.CLEANUP, S.COMPLETE, True),
    (S.CLEANUP, S.CANCELLED, True),
    (S.COMPLETE, S.CLEANUP, False),      # final states are never left
    (S.COMPLETE, S.CANCELLED, False),
    (S.CANCELLED, S.COMPLETE, False),
    (S.CANCELLED, S.WAITING, False),
]


@pytest.mark.parametrize("current, to, allowed", ROWS)
def test_transition_rows(current: JobState, to: JobState, allowed: bool) -> None:
    assert may_transition(current, to) is allowed
    assert may_transition(str(current), str(to)) is allowed  # plain names, as Redis returns them


@pytest.mark.parametrize("final", sorted(FINAL_STATES))
@pytest.mark.parametrize("to", list(JobState))
def test_final_states_are_never_left(final: JobState, to: JobState) -> None:
    assert not may_transition(final, to)


@pytest.mark.parametrize("back", [S.WAITING, S.PROVISION, S.ALLOCATED, S.RESERVE, S.TEST])
def test_cleanup_never_goes_back(back: JobState) -> None:
    assert not may_transition(S.CLEANUP, back)


def test_waiting_is_never_reentered() -> None:
    assert TRANSITIONS[S.WAITING] == frozenset()


def _reachable_from(start: JobState) -> set[JobState]:
    seen, todo = {start}, deque([start])
    while todo:
        current = todo.popleft()
        for to in JobState:
            if to not in seen and may_transition(current, to):
                seen.add(to)
                todo.append(to)
    return seen


def test_every_state_is_reachable_from_waiting() -> None:
    assert _reachable_from(S.WAITING) == set(JobState)


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_every_active_state_can_end(state: JobState) -> None:
    """Failures and cancels are normal: a live job can always be cleaned up and ended."""
    assert may_transition(state, S.CLEANUP)
    assert may_transition(state, S.COMPLETE) and may_transition(state, S.CANCELLED)


def test_the_table_names_every_state_and_only_states() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert all(sources <= set(JobState) for sources in TRANSITIONS.values())
    assert FINAL_STATES | ACTIVE_STATES == set(JobState) and not FINAL_STATES & ACTIVE_STATES


@pytest.mark.parametrize("state, final", [(None, False), ("test", False), ("complete", True), (S.CANCELLED, True)])
def test_is_final(state: str | None, final: bool) -> None:
    assert is_final(state) is final


@pytest.mark.parametrize("enum, words", [
    (JobState, ["waiting", "provision", "allocated", "reserve", "test", "cleanup", "complete", "cancelled"]),
    (Phase, ["provision", "allocate", "reserve", "test", "cleanup"]),
    (Signal, ["cancel", "test", "release", "start", "timeout", "authorize"]),
    (Outcome, ["pass", "fail", "cancelled"]),
])
def test_names_are_testflingers_words(enum: type, words: list[str]) -> None:
    """The enums are their plain words on the wire: stored, compared and shown as such."""
    assert [str(member) for member in enum] == words
    assert all(member == word and f"{member}" == word for member, word in zip(enum, words))
