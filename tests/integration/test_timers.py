"""Durable deadlines in Redis: one set for every kind, fired once, never after they were moved."""
from __future__ import annotations

import pytest

from convoy.coordinator.state import keys
from convoy.coordinator.state.timers import Timer, clear_timers, due, fired, next_due, set_timer, timer_at

pytestmark = pytest.mark.integration


def test_due_deadlines_come_earliest_first_with_their_kind(redis_client):
    set_timer(redis_client, Timer.RESERVATION, "p1", 300.0)
    set_timer(redis_client, Timer.ALLOCATION, "p2", 100.0)
    set_timer(redis_client, Timer.GLOBAL, "j3", 900.0)
    assert next_due(redis_client) == 100.0
    assert due(redis_client, 500.0) == [(Timer.ALLOCATION, "p2", 100.0), (Timer.RESERVATION, "p1", 300.0)]
    # setting a deadline wakes the scheduler, which then sleeps no longer than the earliest
    assert redis_client.xlen(keys.SCHEDULER_EVENTS) == 3


def test_a_deadline_moved_after_it_was_read_is_not_fired(redis_client):
    set_timer(redis_client, Timer.RESERVATION, "p1", 100.0)
    [(kind, job_id, at)] = due(redis_client, 150.0)
    set_timer(redis_client, Timer.RESERVATION, "p1", 7300.0)  # `convoy reserve extend` meanwhile
    assert not fired(redis_client, kind, job_id, at)
    assert timer_at(redis_client, Timer.RESERVATION, "p1") == 7300.0


def test_a_due_deadline_fires_once(redis_client):
    set_timer(redis_client, Timer.ALLOCATION, "p1", 100.0)
    [(kind, job_id, at)] = due(redis_client, 150.0)
    assert fired(redis_client, kind, job_id, at)
    assert not fired(redis_client, kind, job_id, at)  # a second scheduler reading the same deadline
    assert due(redis_client, 150.0) == [] and next_due(redis_client) is None


def test_kinds_of_one_job_are_separate_and_cleared_together(redis_client):
    set_timer(redis_client, Timer.ALLOCATION, "p1", 100.0)
    set_timer(redis_client, Timer.RESERVATION, "p1", 200.0)
    clear_timers(redis_client, Timer.ALLOCATION, ["p1", "p2"])
    assert timer_at(redis_client, Timer.ALLOCATION, "p1") is None
    assert timer_at(redis_client, Timer.RESERVATION, "p1") == 200.0


def test_a_member_that_is_not_a_deadline_is_dropped_never_fired(redis_client):
    redis_client.zadd(keys.TIMERS, {"bogus": 1.0, "nokind:x": 2.0})
    assert due(redis_client, 10.0) == []
    assert redis_client.zcard(keys.TIMERS) == 0
