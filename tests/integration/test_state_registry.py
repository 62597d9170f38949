"""The state layer's named operations that replace raw key use elsewhere (real Redis, no workers).

The device registry (register, holder, known queues, health, maintenance and
provisioning failures), alive marks, and the
job store's listing, children and multi-job event reads.
"""
from __future__ import annotations

import pytest

from convoy.config.devices import DeviceConfig
from convoy.coordinator.state import devices
from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.presence import AliveMark, missing
from convoy.errors import ConvoyError

pytestmark = pytest.mark.integration


def device(name: str = "dev-1", queues: tuple[str, ...] = ("q1", "q2")) -> DeviceConfig:
    return DeviceConfig(name=name, queues=queues, connector="emulated", config={})


def test_a_registered_device_serves_its_queues_and_shows_idle(redis_client):
    devices.register(redis_client, device(), "host-a")
    assert devices.known_queues(redis_client) == {"q1", "q2"}
    [summary] = devices.device_summaries(redis_client)
    assert (summary.name, summary.host, summary.queues, summary.health, summary.job_id) == \
        ("dev-1", "host-a", ("q1", "q2"), "idle", None)
    assert (summary.device_type, summary.tags, summary.connector, summary.maintenance) == (None, (), "emulated", "")
    assert devices.holder(redis_client, "dev-1") is None


def test_a_device_is_registered_with_its_type_and_tags(redis_client):
    devices.register(redis_client, DeviceConfig(name="dev-1", queues=("q",), device_type="qemu",
                                                tags=("usb", "hdmi")), "host-a")
    [summary] = devices.device_summaries(redis_client)
    assert (summary.device_type, summary.tags) == ("qemu", ("usb", "hdmi"))


def test_a_busy_device_taken_out_of_service_finishes_its_job_first(redis_client):
    devices.register(redis_client, device(), "host-a")
    devices.claim_device(redis_client, "dev-1", "job-7")
    devices.set_maintenance(redis_client, "dev-1", "flaky usb")
    [summary] = devices.device_summaries(redis_client)
    assert (summary.health, summary.job_id, summary.maintenance) == ("busy", "job-7", "flaky usb")
    devices.release_device(redis_client, "dev-1", "job-7")
    assert [(s.health, s.maintenance) for s in devices.device_summaries(redis_client)] == \
        [("maintenance", "flaky usb")]
    devices.set_online(redis_client, "dev-1")
    assert [(s.health, s.maintenance) for s in devices.device_summaries(redis_client)] == [("idle", "")]


def test_three_provisioning_failures_in_a_row_put_a_device_in_maintenance(redis_client):
    devices.register(redis_client, device(), "host-a")
    assert not devices.provision_failed(redis_client, "dev-1", "boot timeout")
    devices.provision_succeeded(redis_client, "dev-1")  # a success starts the count again
    failures = [devices.provision_failed(redis_client, "dev-1", "boot timeout")
                for _ in range(devices.MAX_PROVISION_FAILURES)]
    assert failures == [False] * (devices.MAX_PROVISION_FAILURES - 1) + [True]
    [summary] = devices.device_summaries(redis_client)
    assert summary.health == "maintenance" and "boot timeout" in summary.maintenance
    devices.set_online(redis_client, "dev-1")
    [summary] = devices.device_summaries(redis_client)
    assert (summary.health, summary.failures) == ("idle", 0)


def test_an_unknown_device_cannot_change_service_and_the_error_names_the_registered_ones(redis_client):
    devices.register(redis_client, device(), "host-a")
    for change in (lambda: devices.set_maintenance(redis_client, "nope", "x"),
                   lambda: devices.set_online(redis_client, "nope")):
        with pytest.raises(ConvoyError, match=r"no device named 'nope' is registered \(registered: dev-1\)"):
            change()


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
    assert [s.health for s in devices.device_summaries(redis_client)] == ["offline"]


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


