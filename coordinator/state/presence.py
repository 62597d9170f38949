"""Alive marks: a key with a TTL that exists while a worker process beats.

Each device worker keeps one named after its device, the coordinator worker
one of its own; ``workers/heartbeat.py`` renews them.  ``convoy agents`` tells
online from offline devices by them, and the embedded cluster waits for them
at start.  A process that dies stops renewing its mark, so the mark is gone
within ``ALIVE_TTL_SECONDS`` without anyone cleaning up.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

import redis

from convoy.coordinator.state import keys
from convoy.coordinator.state.jobs import now_iso

#: a mark not renewed for this long is gone (heartbeats renew it every few seconds)
ALIVE_TTL_SECONDS = 15

#: a client, or a pipeline to queue the command in
Target = Union[redis.Redis, "redis.client.Pipeline"]


@dataclass(frozen=True)
class AliveMark:
    """The alive mark of one worker process: a device's worker, or the coordinator worker."""

    #: what it marks: the device's name, or ``coordinator``
    name: str
    _key: str = field(repr=False)

    @classmethod
    def of_device(cls, name: str) -> AliveMark:
        return cls(name, keys.device_alive(name))

    @classmethod
    def of_coordinator(cls) -> AliveMark:
        return cls("coordinator", keys.COORDINATOR_ALIVE)

    def set(self, target: Target, ttl: int = ALIVE_TTL_SECONDS) -> None:
        """Show the worker alive for ``ttl`` seconds more."""
        target.set(self._key, now_iso(), ex=ttl)

    def clear(self, target: Target) -> None:
        """Show the worker gone now (a clean shutdown), not after its TTL."""
        target.delete(self._key)


def missing(client: redis.Redis, marks: Iterable[AliveMark]) -> list[AliveMark]:
    """The marks that are not set now, in the order given (one round trip)."""
    wanted = list(marks)
    pipe = client.pipeline(transaction=False)
    for mark in wanted:
        pipe.exists(mark._key)
    return [mark for mark, present in zip(wanted, pipe.execute(), strict=True) if not present]
