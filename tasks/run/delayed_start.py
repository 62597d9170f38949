"""LAVA's delayed start: a role's test commands begin once another role says ``lava_start``.

A role with ``request: lava-start`` and ``expect_role: R`` waits until every
member of R has run ``lava-send lava_start`` (LAVA's host/guest pattern: the
host boots, starts its server, then lets the guests in).  The wait is the
MultiNode store's own, woken by pub/sub; it fails on timeout, as soon as a
member of the group fails, or when Redis stays unreachable until the deadline
(a shorter outage, such as a Redis restart, is ridden out).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from convoy.errors import BarrierTimeout, GroupMemberFailed, ServiceUnavailable

START_MESSAGE = "lava_start"


def start_request(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The job's delayed-start request (``multinode: {request: lava-start, ...}``), if any."""
    spec = job.get("multinode") or {}
    return dict(spec) if spec.get("request") == "lava-start" else None


def wait_for_start(client: Any, group_id: str, spec: Mapping[str, Any], out: Callable[[str], None],
                   default_timeout: float | None = None) -> int:
    """Block until the expected role sent ``lava_start``; 0 then, 1 on timeout or group failure."""
    from convoy.coordinator.multinode.store import wait_all

    role = spec["expect_role"]
    timeout = spec.get("timeout") or default_timeout
    out(f"delayed start: waiting for {START_MESSAGE} from role {role}")
    try:
        wait_all(client, group_id, START_MESSAGE, role=role, timeout=timeout)
    except BarrierTimeout as exc:
        out(f"delayed start: timed out after {exc.timeout:g}s waiting for {START_MESSAGE} from role {role}")
        return 1
    except (GroupMemberFailed, ServiceUnavailable) as exc:
        out(f"delayed start: {exc}")
        return 1
    out(f"delayed start: {START_MESSAGE} received from role {role}")
    return 0
