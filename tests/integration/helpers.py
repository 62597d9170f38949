"""Helpers for integration tests (plain functions; fixtures live in conftest.py)."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Callable

from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import get_store
from convoy.workers.embedded.lab import wait_until

CONVOY = str(Path(sys.executable).parent / "convoy")
REPO = Path(__file__).resolve().parents[2]


def unique_queue(name: str) -> str:
    """A queue name no other test uses (tests share one Redis)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def states_seen(job_id: str) -> list[str]:
    entries = get_store().client.xrange(keys.job_events(job_id))
    return [fields["state"] for _, fields in entries if fields.get("type") == "state"]


def wait_for_state(job_id: str, state: str, timeout: float = 60) -> None:
    store = get_store()
    assert store.wait_until([job_id], lambda: store.state(job_id) == state, timeout), \
        f"job {job_id} never reached {state}; it is {store.state(job_id)}"


def wait_for(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """:func:`wait_until` that fails the test with ``what`` at the deadline."""
    value = wait_until(condition, timeout, interval=0.01)
    if not value:
        raise AssertionError(f"{what} not reached within {timeout}s")
    return value


def assert_all_released(parent_id: str) -> None:
    """Every child cancelled; every child that held a device cleaned it and left it idle."""
    store = get_store()
    for child_id in store.children(parent_id):
        record = store.get(child_id)
        assert record["state"] == "cancelled", f"child {child_id} is {record['state']}"
        if record.get("device"):
            assert "cleanup" in store.phases(child_id), f"child {child_id} held a device but never cleaned it"
            # a device whose worker died is cleaned by its restarted worker: that may come a moment later
            wait_for(lambda d=record["device"]: store.client.hget(keys.device(d), "state") == "idle", 60,
                     f"device {record['device']} idle")
