"""The scheduler's state in Redis: the jobs waiting for devices, their deadlines, its wake-ups.

``submit_job`` puts a job in the waiting set (and a multi job's allocation
deadline in the deadline set) and wakes the scheduler; the scheduler reads
them, assigns devices in one atomic step (:func:`assign`, all or none) and
takes the job out of the set.  Anything that may let a waiting job start (a
submit, a release, a device registering or going back online) appends to the
wake-up stream the scheduler blocks on: it decides on events, not by polling.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import redis

from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import block_ms_before
from convoy.coordinator.state.presence import Target
from convoy.coordinator.state.timers import Timer, clear_timers, set_timer

#: wake-ups kept in the stream (the scheduler only needs the newest)
EVENTS_MAXLEN = 1000

_LUA = Path(__file__).parent / "lua"
_ASSIGN = (_LUA / "assign.lua").read_text(encoding="utf-8")
_REASSIGN = (_LUA / "reassign.lua").read_text(encoding="utf-8")


def wake(target: Target, why: str) -> None:
    """Wake the scheduler (inside ``target``'s pipeline when it is one)."""
    target.xadd(keys.SCHEDULER_EVENTS, {"why": why}, maxlen=EVENTS_MAXLEN, approximate=True)


def enqueue(target: Target, job_id: str, submitted: float, deadline: float | None = None) -> None:
    """Put a job in the waiting set (with its allocation deadline, if any) and wake the scheduler."""
    target.zadd(keys.SCHEDULER_WAITING, {job_id: submitted})
    if deadline is not None:
        set_timer(target, Timer.ALLOCATION, job_id, deadline)
    wake(target, f"job {job_id} submitted")


def waiting(client: redis.Redis) -> list[tuple[str, float]]:
    """(job id, submission time) of every waiting job, oldest first."""
    entries: Any = client.zrange(keys.SCHEDULER_WAITING, 0, -1, withscores=True)
    return [(str(job_id), float(score)) for job_id, score in entries]


def is_waiting(client: redis.Redis, job_id: str) -> bool:
    return client.zscore(keys.SCHEDULER_WAITING, job_id) is not None


def drop(client: redis.Redis, job_ids: Iterable[str]) -> None:
    """Forget jobs that no longer wait (cancelled, timed out) and their allocation deadlines."""
    ids = list(job_ids)
    if ids:
        pipe = client.pipeline()
        pipe.zrem(keys.SCHEDULER_WAITING, *ids)
        clear_timers(pipe, Timer.ALLOCATION, ids)
        pipe.execute()


def clear_deadline(client: redis.Redis, job_id: str) -> None:
    """The job is allocated (or ended): its allocation deadline no longer applies."""
    clear_timers(client, Timer.ALLOCATION, [job_id])


def assign(client: redis.Redis, job_id: str, devices: Mapping[str, str], now: str) -> tuple[bool, str]:
    """Give a waiting job its devices (member job id → device name) in one step, or nothing.

    Refused (``False``, why) when the job no longer waits, or any device is
    no longer idle, in service and alive.  On success each device is
    ``assigned`` to its member, each member records ``assigned_device``, and
    the job leaves the waiting set.
    """
    script_keys = [keys.SCHEDULER_WAITING, keys.job(job_id)]
    for member, device in devices.items():
        script_keys += [keys.device(device), keys.device_alive(device), keys.job(member)]
    ok, why = client.eval(_ASSIGN, len(script_keys), *script_keys, job_id, now)
    return bool(ok), why


def reassign(client: redis.Redis, member: str, old: str, new: str, now: str) -> bool:
    """Move a member not yet started from ``old`` (gone offline) to idle device ``new``."""
    return bool(client.eval(_REASSIGN, 4, keys.job(member), keys.device(old), keys.device(new),
                            keys.device_alive(new), member, old, new, now))


def last_event(client: redis.Redis) -> str:
    """The id of the newest wake-up ("0-0" when none): read events after it."""
    newest: Any = client.xrevrange(keys.SCHEDULER_EVENTS, count=1)
    return str(newest[0][0]) if newest else "0-0"


def wait_for_event(client: redis.Redis, after: str, timeout: float) -> tuple[str, list[str]]:
    """Block until a wake-up after ``after`` (or ``timeout`` seconds); the newest id and the reasons."""
    block = block_ms_before(time.monotonic() + timeout)
    if block is None:
        return after, []
    reply: Any = client.xread({keys.SCHEDULER_EVENTS: after}, block=block, count=100)
    if not reply:
        return after, []
    entries = reply[0][1]
    return str(entries[-1][0]), [str(fields.get("why", "")) for _, fields in entries]
