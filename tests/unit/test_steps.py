"""Which step a multi job's parent owes: one small table (the decision every path and every repair asks)."""
from __future__ import annotations

import pytest

from convoy.config.steps import ParentFacts, ParentStep, owed_step

COLLECT, RESERVE, TEST, CLEANUP = ParentStep.COLLECT, ParentStep.RESERVE, ParentStep.TEST, ParentStep.CLEANUP


def facts(state: str, *done: ParentStep, **more: bool) -> ParentFacts:
    return ParentFacts(state=state, done=frozenset(done), **more)


@pytest.mark.parametrize("given, owed", [
    # waiting: the scheduler's turn; provisioning: collect once every child is allocated
    (facts("waiting"), None),
    (facts("provision"), None),
    (facts("provision", children_allocated=True), COLLECT),
    # then reserve (if asked for), test, cleanup, each once
    (facts("allocated", COLLECT), TEST),
    (facts("allocated", COLLECT, reserve=True), RESERVE),
    (facts("reserve", COLLECT, reserve=True), RESERVE),  # its coordinator died before the hold began: again
    (facts("reserve", COLLECT, reserve=True, holding=True), None),  # held: its deadline's turn
    (facts("reserve", COLLECT, RESERVE, reserve=True, holding=True), TEST),
    (facts("test", COLLECT), TEST),  # a test whose coordinator died: run again (it resumes or fails)
    (facts("test", COLLECT, TEST), CLEANUP),
    (facts("cleanup", COLLECT, TEST), CLEANUP),
    (facts("cleanup", COLLECT, TEST, CLEANUP), None),
    # a cancel or an aborted allocation: only cleanup is left, in any state (a waiting job's too)
    (facts("waiting", stopping=True), CLEANUP),
    (facts("provision", stopping=True), CLEANUP),
    (facts("reserve", COLLECT, reserve=True, holding=True, stopping=True), CLEANUP),
    (facts("test", COLLECT, stopping=True), CLEANUP),
    (facts("cleanup", COLLECT, CLEANUP, stopping=True), None),
    # final: nothing, ever
    (facts("complete", COLLECT, TEST, CLEANUP), None),
    (facts("cancelled", stopping=True), None),
])
def test_owed_step(given, owed):
    assert owed_step(given) == owed
