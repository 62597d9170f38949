"""Group lifecycle for the job runner: create, fail a member, read the API log, expire.

The group id is the parent job id; its members are the child jobs with their
roles.  These functions take the runner's redis-py client (or a ``RespConn``).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from convoy.coordinator.state import keys
from convoy.coordinator.multinode import lua
from convoy.coordinator.multinode.store import Group, load_group
from convoy.errors import ConvoyError

__all__ = ["api_calls", "create_group", "delete_group", "expire_group", "fail_member", "get_group"]

_NAME = re.compile(r"^[^\s]+$")


def create_group(client: Any, group_id: str, members: Mapping[str, str], *, timeout: float = 600.0) -> None:
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
    lua.CREATE(client, [keys.group_info(group_id), keys.group_members(group_id)], args)


def get_group(client: Any, group_id: str) -> Group:
    """Members (job id, role) in job order and the default timeout."""
    return load_group(client, group_id)


def fail_member(client: Any, group_id: str, job_id: str, reason: str) -> None:
    """Record that ``job_id`` failed and wake every waiter of the group.

    Every pending and every later wait of the group then fails at once with
    ``group member <job_id> <reason>`` (so write ``reason`` to read on from
    there: ``"failed: test command exited 1"``, ``"was cancelled"``).
    """
    g = group_id
    lua.FAIL(client, [keys.group_info(g), keys.group_members(g), keys.group_failed(g), keys.group_channel(g)],
             [job_id, reason or "failed"])


def failed_members(client: Any, group_id: str) -> dict[str, str]:
    """Failed member job id -> reason."""
    raw = client.execute_command("HGETALL", keys.group_failed(group_id))
    if isinstance(raw, dict):
        return {_s(k): _s(v) for k, v in raw.items()}
    return {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw or []), 2)}


def api_calls(client: Any, group_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Every MultiNode API call of the group from index ``start``, oldest first.

    Each: ``{"job_id", "role", "name": "multinode-<call>-<message id>",
    "result": "pass" | "fail", "detail"?, "time"}``.
    """
    items = client.execute_command("LRANGE", keys.group_api_log(group_id), start, -1) or []
    return [json.loads(_s(item)) for item in items]


def expire_group(client: Any, group_id: str, seconds: float) -> None:
    """Let every key of the group expire in ``seconds`` (call when the job ends).

    Keys created afterwards (a late command) inherit the remaining TTL."""
    _every_key(client, group_id, str(max(1, int(seconds * 1000))))


def delete_group(client: Any, group_id: str) -> None:
    """Remove every key of the group now (tests, cleanup)."""
    _every_key(client, group_id, "del")


def _every_key(client: Any, group_id: str, what: str) -> None:
    g = group_id
    lua.EXPIRE(client, [keys.group_info(g), keys.group_members(g), keys.group_failed(g),
                        keys.group_api_log(g), keys.group_keys(g)], [what])


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
