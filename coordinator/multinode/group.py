"""Group lifecycle for workers and coordinators: create, fail a member, read the API log, expire.

The group id is the parent job id; its members are the child jobs with their
roles.  Every function takes the caller's redis-py client and talks through
the store's sibling client to the same Redis (``store.raw``).  Each call
retries a lost connection until ``store.CONNECT_BUDGET`` has passed, then
raises ``ServiceUnavailable``.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis

from convoy.coordinator.multinode import lua
from convoy.coordinator.multinode.store import CONNECT_BUDGET, Group, load_group, raw, retrying
from convoy.coordinator.state import keys
from convoy.errors import ConvoyError

__all__ = ["api_calls", "create_group", "delete_group", "expire_group", "fail_member",
           "failed_members", "get_group"]

T = TypeVar("T")

_NAME = re.compile(r"^[^\s]+$")


def _run(client: redis.Redis, call: Callable[[redis.Redis], T]) -> T:
    """``call`` on the store's client for ``client``'s Redis, retried until ``CONNECT_BUDGET`` has passed."""
    c = raw(client)
    return retrying(client, lambda: call(c), time.monotonic() + CONNECT_BUDGET)


def create_group(client: redis.Redis, group_id: str, members: Mapping[str, str], *, timeout: float = 600.0) -> None:
    """Register the group: member job id -> role, in the order the job lists them.

    ``timeout`` is the default for every wait of the group (a command's
    ``--timeout`` or ``CONVOY_MULTINODE_TIMEOUT`` overrides it).  Creating an
    existing group replaces its members and settings, not its messages.
    """
    if not members:
        raise ConvoyError(f"MultiNode group {group_id!r} needs at least one member")
    for job_id, role in members.items():
        if not _NAME.match(str(job_id)) or not _NAME.match(str(role)):
            raise ConvoyError(f"MultiNode group {group_id!r}: job id {job_id!r} and role {role!r} "
                              "must be non-empty and contain no whitespace")
    if not timeout or timeout <= 0:
        raise ConvoyError(f"MultiNode group {group_id!r}: timeout must be positive, not {timeout!r}")
    pairs = [[str(j), str(r)] for j, r in members.items()]
    args: list[Any] = [repr(float(timeout)), json.dumps(pairs), repr(time.time())]
    for job_id, role in pairs:
        args += [job_id, role]
    _run(client, lambda c: lua.CREATE(c, [keys.group_info(group_id), keys.group_members(group_id)], args))


def get_group(client: redis.Redis, group_id: str) -> Group:
    """Members (job id, role) in job order and the default timeout."""
    return load_group(client, group_id)


def fail_member(client: redis.Redis, group_id: str, job_id: str, reason: str) -> None:
    """Record that ``job_id`` failed and wake every waiter of the group.

    Every pending and every later wait of the group then fails at once with
    ``group member <job_id> <reason>`` (so write ``reason`` to read on from
    there: ``"failed: test command exited 1"``, ``"was cancelled"``).
    """
    g = group_id
    _run(client, lambda c: lua.FAIL(
        c, [keys.group_info(g), keys.group_members(g), keys.group_failed(g), keys.group_channel(g)],
        [job_id, reason or "failed"]))


def failed_members(client: redis.Redis, group_id: str) -> dict[str, str]:
    """Failed member job id -> reason."""
    found = _run(client, lambda c: c.hgetall(keys.group_failed(group_id)))
    return {_str(k): _str(v) for k, v in (found or {}).items()}


def api_calls(client: redis.Redis, group_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Every MultiNode API call of the group from index ``start``, oldest first.

    Each: ``{"job_id", "role", "name": "multinode-<call>-<message id>",
    "result": "pass" | "fail", "detail"?, "time"}``.
    """
    items = _run(client, lambda c: c.lrange(keys.group_api_log(group_id), start, -1))
    return [json.loads(item) for item in items or []]


def expire_group(client: redis.Redis, group_id: str, seconds: float) -> None:
    """Let every key of the group expire in ``seconds`` (call when the job ends).

    Keys created afterwards (a late command) inherit the remaining TTL."""
    _every_key(client, group_id, str(max(1, int(seconds * 1000))))


def delete_group(client: redis.Redis, group_id: str) -> None:
    """Remove every key of the group now (tests, cleanup)."""
    _every_key(client, group_id, "del")


def _every_key(client: redis.Redis, group_id: str, what: str) -> None:
    g = group_id
    _run(client, lambda c: lua.EXPIRE(c, [keys.group_info(g), keys.group_members(g), keys.group_failed(g),
                                                keys.group_api_log(g), keys.group_keys(g)], [what]))


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
