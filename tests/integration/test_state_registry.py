"""The state layer's named operations that replace raw key use elsewhere (real Redis, no workers).

The device registry (register, holder, known queues), alive marks, and the
job store's listing, children and multi-job event reads.
"""
from __future__ import annotations

import pytest

from convoy.config.devices import DeviceConfig
from convoy.coordinator.state import devices
from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.presence import AliveMark, missing

pytestmark = pytest.mark.integration


def device(name: str = "dev-1", queues: tuple[str, ...] = ("q1", "q2")) -> DeviceConfig:
    return DeviceConfig(name=name, queues=queues, connector="emulated", config={})


def test_a_registered_device_serves_its_queues_and_shows_idle_and_online(redis_client):
    devices.register(redis_client, device(), "host-a")
    assert devices.known_queues(redis_client) == {"q1", "q2"}
    [summary] = devices.device_summaries(redis_client)
    assert (summary.name, summary.host, summary.queues, summary.status, summary.job_id) == \
        ("dev-1", "host-a", ("q1", "q2"), "online", None)
    assert devices.holder(redis_client, "dev-1") is None


def test_registering_again_keeps_the_job_the_device_holds(redis_client):
    devices.register(redis_client, device(), "host-a")
    devices.claim_device(redis_client, "dev-1", "job-7")
    devices.register(redis_client, device(), "host-b")  # a restarted worker
    assert devices.holder(redis_client, "dev-1") == "job-7"
    devices.release_device(redis_client, "dev-1", "job-7")
    assert devices.holder(redis_client, "dev-1") is None


def test_alive_marks_are_set_and_cleared_by_name(redis_client):
    marks = [AliveMark.of_device("dev-1"), AliveMark.of_device("dev-2"), AliveMark.of_coordinator()]
    assert [m.name for m in missing(redis_client, marks)] == ["dev-1", "dev-2", "coordinator"]
    marks[0].set(redis_client)
    marks[2].set(redis_client)
    assert [m.name for m in missing(redis_client, marks)] == ["dev-2"]
    marks[0].clear(redis_client)
    assert [m.name for m in missing(redis_client, marks)] == ["dev-1", "dev-2"]


def test_a_device_without_its_alive_mark_shows_offline(redis_client):
    devices.register(redis_client, device(), "host-a")
    AliveMark.of_device("dev-1").clear(redis_client)
    assert [s.status for s in devices.device_summaries(redis_client)] == ["offline"]


def test_children_are_listed_in_the_order_they_were_created(redis_client):
    store = JobStore(redis_client)
    with store.pipeline() as pipe:
        store.create("p", {}, queue="multi", pipe=pipe)
        for child in ("c2", "c1", "c3"):
            store.create(child, {}, queue="q", parent_job_id="p", pipe=pipe)
        pipe.execute()
    assert store.children("p") == ["c2", "c1", "c3"]
    assert store.get("c1")["parent_job_id"] == "p"
    assert store.children("c1") == []


def test_newest_lists_the_latest_jobs_first(redis_client):
    store = JobStore(redis_client)
    for job_id in ("a", "b", "c"):
        store.create(job_id, {}, queue="q")
    assert store.newest(2)[0] == "c" and len(store.newest(2)) == 2
    assert set(store.newest(10)) == {"a", "b", "c"}


def test_read_events_follows_several_jobs_from_their_positions(redis_client):
    store = JobStore(redis_client)
    store.create("a", {}, queue="q")
    store.create("b", {}, queue="q")
    store.append_output("a", "test", "hello\n")
    positions = {"a": "0-0", "b": "0-0"}
    events = store.read_events(positions)
    assert [(job, fields["type"]) for job, _, fields in events] == [("a", "state"), ("a", "output"), ("b", "state")]
    for job, event_id, _ in events:
        positions[job] = event_id
    assert store.read_events(positions) == []
    store.transition("b", "provision")
    [(job, _, fields)] = store.read_events(positions, block_ms=1000)
    assert (job, fields["state"], fields["from"]) == ("b", "provision", "waiting")
    assert store.read_events({}) == []


def test_the_dispatch_lock_is_one_at_a_time(redis_client):
    store = JobStore(redis_client)
    with store.dispatch_lock():
        assert not store.dispatch_lock(timeout=0.01).acquire(blocking=False)
    assert store.dispatch_lock().acquire(blocking=False)
