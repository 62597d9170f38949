"""Control signals reach a running job whether sent before or after its watcher started."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from convoy.coordinator.state.connection import make_client
from convoy.coordinator.state.control import ControlWatcher
from convoy.coordinator.state.jobs import JobStore
from convoy.workers.embedded.redis_server import RedisServer, free_port
from helpers import wait_for

pytestmark = pytest.mark.integration


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


def test_the_watcher_has_a_connection_of_its_own_that_ends_with_it(redis_client):
    def connections() -> int:
        return sum(1 for c in redis_client.client_list() if c.get("name") == "convoy-control:j4")

    with ControlWatcher(redis_client, "j4") as watcher:
        assert connections() == 1
        JobStore(redis_client).signal("j4", "cancel")
        assert watcher.wait_any(("cancel",), timeout=10) == "cancel"
    wait_for(lambda: connections() == 0)





def test_signals_reach_the_watcher_across_a_redis_restart(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    client = make_client(server.url)
    try:
        store = JobStore(client)
        store.signal("j5", "test")  # before the restart: seen once, not again after it
        seen: list[str] = []
        watcher = ControlWatcher(client, "j5")
        watcher.on_signal(seen.append)  # before it reads: the signal sent before it started counts too
        with watcher:
            assert watcher.wait_any(("test",), timeout=10) == "test"
            server = server.restart()
            wait_for(lambda: any(c.get("cmd") == "xread" for c in client.client_list()))  # reading again
            store.signal("j5", "cancel")
            assert watcher.wait_any(("cancel",), timeout=30) == "cancel"
        assert seen == ["test", "cancel"]
    finally:
        client.close()
        server.stop()
