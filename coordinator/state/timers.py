"""Durable deadlines: every timer of every job in one sorted set, fired by the scheduler.

A deadline is a member ``<kind>:<job id>`` scored by the epoch second it
falls due.  No thread sleeps through it and no countdown message carries
it: whichever coordinator holds the scheduler's lease (also the timer
lease) reads the due ones on each pass and fires them
(:mod:`convoy.tasks.scheduler`), so a deadline survives the death of the
process that set it.  Setting one wakes the scheduler, which then sleeps no
longer than the earliest deadline.
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis

from convoy.coordinator.state import keys
from convoy.coordinator.state.presence import Target

_FIRE = (Path(__file__).parent / "lua" / "fire_timer.lua").read_text(encoding="utf-8")


class Timer(StrEnum):
    """What a deadline ends."""

    #: ``allocation_timeout``: the job waited too long for its devices
    ALLOCATION = "allocation"
    #: ``reserve_data.timeout`` (moved by ``convoy reserve extend`` / ``convoy release``)
    RESERVATION = "reservation"
    #: ``global_timeout``, counted from the job's first test start (a backstop to the script runner's own)
    GLOBAL = "global"


def _member(kind: Timer, job_id: str) -> str:
    return f"{kind}:{job_id}"


def set_timer(target: Target, kind: Timer, job_id: str, at: float) -> None:
    """Make ``kind`` of ``job_id`` fall due at ``at`` (epoch seconds), replacing any earlier one."""
    target.zadd(keys.TIMERS, {_member(kind, job_id): at})
    target.xadd(keys.SCHEDULER_EVENTS, {"why": f"{kind} deadline of {job_id}"}, maxlen=1000, approximate=True)


def clear_timers(target: Target, kind: Timer, job_ids: Iterable[str]) -> None:
    members = [_member(kind, job_id) for job_id in job_ids]
    if members:
        target.zrem(keys.TIMERS, *members)


def timer_at(client: redis.Redis, kind: Timer, job_id: str) -> float | None:
    """When ``kind`` of ``job_id`` falls due (None: no such deadline)."""
    score = client.zscore(keys.TIMERS, _member(kind, job_id))
    return None if score is None else float(score)


def due(client: redis.Redis, now: float) -> list[tuple[Timer, str, float]]:
    """Every deadline that has passed, earliest first: (kind, job id, when it fell due)."""
    members: Any = client.zrangebyscore(keys.TIMERS, "-inf", now, withscores=True)
    out = []
    for member, at in members:
        kind, _, job_id = str(member).partition(":")
        if kind in tuple(Timer) and job_id:
            out.append((Timer(kind), job_id, float(at)))
        else:  # not ours: never fire it, never see it again
            client.zrem(keys.TIMERS, member)
    return out


def fired(client: redis.Redis, kind: Timer, job_id: str, at: float) -> bool:
    """Take a due deadline out, only if it is still the one read (an extension since keeps it)."""
    return bool(client.eval(_FIRE, 1, keys.TIMERS, _member(kind, job_id), repr(at)))


def next_due(client: redis.Redis) -> float | None:
    """When the earliest deadline falls due (None: none is set)."""
    first: Any = client.zrange(keys.TIMERS, 0, 0, withscores=True)
    return float(first[0][1]) if first else None
