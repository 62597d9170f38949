"""The job store: atomic transitions, phases, output, events (real Redis, no workers)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import make_client
from convoy.coordinator.state.jobs import JobStore
from convoy.workers.embedded.redis_server import RedisServer, free_port
from helpers import wait_for

pytestmark = pytest.mark.integration


def make(redis_client, job_id="j1", queue="q"):
    store = JobStore(redis_client)
    store.create(job_id, {"job_queue": queue}, queue=queue)
    return store


def test_new_job_is_waiting_and_listed_as_waiting_on_its_queue(redis_client):
    store = make(redis_client)
    assert store.state("j1") == "waiting"
    assert redis_client.zrange(keys.queue_waiting("q"), 0, -1) == ["j1"]
    assert store.get("j1")["document"] == {"job_queue": "q"}


def test_transition_respects_allowed_states_and_leaves_the_waiting_list(redis_client):
    store = make(redis_client)
    assert store.transition("j1", "test", allowed_from=["provision"]) == (False, "waiting")
    assert store.transition("j1", "provision", allowed_from=["waiting"]) == (True, "waiting")
    assert redis_client.zrange(keys.queue_waiting("q"), 0, -1) == []


def test_final_states_never_change(redis_client):
    store = make(redis_client)
    assert store.transition("j1", "cancelled")[0]
    assert store.transition("j1", "provision") == (False, "cancelled")
    assert store.transition("j1", "complete") == (False, "cancelled")


def test_only_one_of_two_racing_transitions_wins(redis_client):
    store = make(redis_client)
    results = []
    barrier = threading.Barrier(2)

    def attempt(state):
        barrier.wait()
        results.append(store.transition("j1", state, allowed_from=["waiting"])[0])

    threads = [threading.Thread(target=attempt, args=(s,)) for s in ("provision", "cancelled")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]


def test_phases_and_output_are_recorded_and_streamed(redis_client):
    store = make(redis_client)
    store.start_phase("j1", "test")
    store.append_output("j1", "test", "hello ")
    store.append_output("j1", "test", "world\n")
    store.end_phase("j1", "test", 3)
    assert store.output("j1", "test") == "hello world\n"
    assert store.phases("j1")["test"]["status"] == 3
    kinds = [f["type"] for _, f in redis_client.xrange(keys.job_events("j1"))]
    assert kinds == ["state", "phase", "output", "output", "phase"]


def test_wait_until_wakes_on_an_event_and_times_out_otherwise(redis_client):
    store = make(redis_client)
    assert store.wait_until(["j1"], lambda: store.state("j1") == "complete", timeout=0.2) is False
    timer = threading.Timer(0.1, lambda: store.transition("j1", "complete"))
    timer.start()
    assert store.wait_until(["j1"], lambda: store.state("j1") == "complete", timeout=10) is True
    timer.join()


def test_once_is_true_exactly_once(redis_client):
    store = make(redis_client)
    assert store.once("j1", "cleanup") is True
    assert store.once("j1", "cleanup") is False
    assert store.happened("j1", "cleanup")



def blocked_readers(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c.get("cmd") == "xread")


class Waiter(threading.Thread):
    def __init__(self, store: JobStore, timeout: float) -> None:
        super().__init__(daemon=True)
        self.store, self.timeout = store, timeout
        self.result: bool | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.store.wait_until(["j1"], lambda: self.store.state("j1") == "complete", self.timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc




def test_wait_until_rides_out_a_redis_restart(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    client = make_client(server.url)
    try:
        store = make(client)
        waiter = Waiter(store, timeout=300)
        wait_for(lambda: blocked_readers(client) == 1)
        server = server.restart()
        wait_for(lambda: blocked_readers(client) == 1)  # reconnected and blocking again, not dead
        assert waiter.is_alive() and waiter.error is None
        store.transition("j1", "complete")
        waiter.join(30)
        assert (waiter.result, waiter.error) == (True, None)
    finally:
        client.close()
        server.stop()


def test_wait_until_gives_up_when_redis_stays_away_past_the_deadline(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    client = make_client(server.url)
    try:
        store = make(client)
        waiter = Waiter(store, timeout=2)
        wait_for(lambda: blocked_readers(client) == 1)
        server.stop()
        waiter.join(60)  # bounds a hang only
        assert not waiter.is_alive()
        assert isinstance(waiter.error, redis.ConnectionError)
    finally:
        client.close()
        server.stop()
