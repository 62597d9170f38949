"""Control signals reach a running job whether sent before or after its watcher started."""
from __future__ import annotations

import threading

from convoy.coordinator.store import JobStore
from convoy.tasks.control import ControlWatcher


def test_a_signal_sent_before_the_watcher_started_is_seen(redis_client):
    store = JobStore(redis_client)
    store.signal("j1", "cancel")
    with ControlWatcher(redis_client, "j1") as watcher:
        assert watcher.wait_any(("cancel",), timeout=10) == "cancel"
        assert watcher.cancel_event.is_set()


def test_signals_after_start_wake_the_waiter_and_callbacks(redis_client):
    store = JobStore(redis_client)
    seen: list[str] = []
    with ControlWatcher(redis_client, "j2") as watcher:
        watcher.on_signal(seen.append)
        threading.Timer(0.1, store.signal, args=("j2", "test")).start()
        assert watcher.wait_any(("release", "test"), timeout=10) == "test"
        watcher.clear("test")
        assert watcher.wait_any(("test",), timeout=0.1) is None
        store.signal("j2", "release")
        assert watcher.wait_any(("release",), timeout=10) == "release"
    assert seen == ["test", "release"]


def test_unknown_signals_are_ignored(redis_client):
    JobStore(redis_client).signal("j3", "reboot")
    with ControlWatcher(redis_client, "j3") as watcher:
        assert watcher.wait_any(("cancel", "release"), timeout=0.2) is None
