"""Multi-device jobs: the chord, job_list.json, coordinated test, cleanup and every failure.

Real Redis, one real celery worker per emulated device, the coordinator
worker, real SSH.  Every failure test checks the parent's final state and
message, every child cancelled, every device released and usable again.
"""
from __future__ import annotations

import json

import pytest

from convoy.config.settings import load_settings
from convoy.coordinator.api import cancel_job, job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.devices import device_summaries

from helpers import assert_all_released, states_seen, unique_queue, wait_for_state

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120


def multi(*queues: str, test_cmds: str | None = None, **extra) -> dict:
    job = {"job_queue": "multi",
           "provision_data": {"jobs": [{"job_queue": q, "provision_data": {"distro": "jammy"}} for q in queues]}}
    if test_cmds:
        job["test_data"] = {"test_cmds": test_cmds}
    job.update(extra)
    return job


def test_two_devices_allocate_together_and_job_list_is_in_order(start_cluster):
    q1, q2 = unique_queue("a"), unique_queue("b")
    start_cluster({q1: 1, q2: 1})
    parent = submit_job(multi(q1, q2, test_cmds="cat job_list.json\necho IPS $DEVICE_IP_1 $DEVICE_IP_2"))
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "pass", results
    children = get_store().children(parent)
    job_list = json.loads((load_settings().jobs_dir / parent / "job_list.json").read_text())
    assert [entry["job_id"] for entry in job_list] == children
    assert [set(entry) for entry in job_list] == [{"job_id", "device_info"}] * 2
    ips = [entry["device_info"]["device_ip"] for entry in job_list]
    assert f"IPS {ips[0]} {ips[1]}" in results["test_output"]
    assert [c["job_queue"] for c in results["children"]] == [q1, q2]
    for child_id in children:
        record = get_store().get(child_id)
        assert record["parent_job_id"] == parent
        assert record["document"]["allocate_data"] == {"allocate": True}
        assert states_seen(child_id)[:3] == ["waiting", "provision", "allocated"]
    assert states_seen(parent) == ["waiting", "provision", "allocated", "test", "cleanup", "complete"]
    assert_all_released(parent)


def test_parent_test_cmds_reach_every_device_over_ssh_and_children_test_together(start_cluster):
    q1, q2 = unique_queue("ssh"), unique_queue("ssh")
    start_cluster({q1: 1, q2: 1})
    job = multi(q1, q2, test_cmds=(
        "for ip in $(jq -r '.[].device_info.device_ip' job_list.json); do ssh ubuntu@$ip 'echo hello from $(cat os-release | grep DEVICE=)'; done"))
    job["provision_data"]["jobs"][1]["test_data"] = {"test_cmds": "echo child sees $DEVICE_IP; ssh ubuntu@$DEVICE_IP true"}
    parent = submit_job(job)
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "pass", results
    assert results["test_output"].count("hello from DEVICE=") == 2
    second = get_store().children(parent)[1]
    child_results = job_results(second)
    assert child_results["test_status"] == 0
    assert f"child sees {child_results['device_info']['device_ip']}" in child_results["test_output"]


def test_child_provisioning_failure_fails_the_parent_and_releases_everything(start_cluster):
    good, bad = unique_queue("good"), unique_queue("bad")
    start_cluster({good: 1})
    start_cluster({bad: 1}, provision_fail=True)
    parent = submit_job(multi(good, bad, test_cmds="echo must not run"))
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "fail"
    assert results["message"] == "Unable to allocate all devices"
    assert "test_status" not in results
    assert_all_released(parent)
    follow_up = submit_job({"job_queue": good, "test_data": {"test_cmds": "true"}})
    assert wait_for_job(follow_up, timeout=JOB_TIMEOUT) == "complete"
    assert job_results(follow_up)["outcome"] == "pass"


def test_allocation_timeout_cancels_all_children(start_cluster):
    fast, slow = unique_queue("fast"), unique_queue("slow")
    start_cluster({fast: 1})
    start_cluster({slow: 1}, provision_delay=600)
    parent = submit_job(multi(fast, slow, allocation_timeout=3))
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "fail"
    assert results["message"] == "Timed out waiting for devices to allocate"
    assert_all_released(parent)


def test_allocation_timeout_of_a_waiting_job_ends_it_holding_nothing(start_cluster, tmp_path):
    """The job never gets its busy device: it waits holding nothing, and times out from submission."""
    free, taken = unique_queue("free"), unique_queue("taken")
    cluster = start_cluster({free: 1, taken: 1})
    blocker = submit_job({"job_queue": taken,  # release: a file in its own directory (it sees no other of root's)
                          "test_data": {"test_cmds": "while [ ! -e release ]; do sleep 0.1; done"}})
    release = cluster.state_dir / "jobs" / blocker / "release"
    wait_for_state(blocker, "test")
    parent = submit_job(multi(free, taken, allocation_timeout=3))
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert (results["outcome"], results["message"]) == ("fail", "Timed out waiting for devices to allocate")
    store = get_store()
    for child in store.children(parent):  # never given a device, so never provisioned
        record = store.get(child)
        assert record["state"] == "cancelled" and not record.get("assigned_device") and not record.get("device")
    assert "waiting" in states_seen(parent) and "provision" not in states_seen(parent)
    free_device = next(d.name for d in cluster.devices if free in d.queues)
    assert next(d for d in device_summaries(store.client) if d.name == free_device).health == "idle"
    release.touch()
    assert wait_for_job(blocker, timeout=JOB_TIMEOUT) == "complete"


def test_cancelling_a_child_before_allocation_fails_the_parent(start_cluster):
    fast, slow = unique_queue("fast"), unique_queue("slow")
    start_cluster({fast: 1})
    start_cluster({slow: 1}, provision_delay=600)
    parent = submit_job(multi(fast, slow))
    slow_child = get_store().children(parent)[1]
    wait_for_state(slow_child, "provision")
    cancel_job(slow_child)
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    assert job_results(parent)["message"] == "Unable to allocate all devices"
    assert_all_released(parent)


@pytest.mark.parametrize("phase", ["provision", "test"])
def test_cancelling_the_parent_in_any_phase_cancels_every_child(start_cluster, phase):
    q1, q2 = unique_queue("c1"), unique_queue("c2")
    start_cluster({q1: 1})
    # in "provision" the second device is slow, so the first is already held when the cancel comes
    start_cluster({q2: 1}, provision_delay=600 if phase == "provision" else 0)
    parent = submit_job(multi(q1, q2, test_cmds="sleep 600"))
    if phase == "provision":
        wait_for_state(get_store().children(parent)[0], "allocated")
    wait_for_state(parent, phase)
    cancel_job(parent)
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "cancelled"
    assert job_results(parent)["outcome"] == "cancelled"
    assert states_seen(parent)[-2:] == ["cleanup", "cancelled"]
    assert_all_released(parent)


def test_two_multi_jobs_sharing_a_device_run_one_after_the_other(start_cluster):
    shared, other_a, other_b = unique_queue("shared"), unique_queue("oa"), unique_queue("ob")
    start_cluster({shared: 1, other_a: 1, other_b: 1})
    first = submit_job(multi(shared, other_a, test_cmds="sleep 1"))
    second = submit_job(multi(shared, other_b, test_cmds="sleep 1"))
    assert wait_for_job(first, timeout=JOB_TIMEOUT) == "complete"
    assert wait_for_job(second, timeout=JOB_TIMEOUT) == "complete"
    store = get_store()
    first_shared, second_shared = store.children(first)[0], store.children(second)[0]
    assert store.get(first_shared)["device"] == store.get(second_shared)["device"]
    released = store.phases(first_shared)["cleanup"]["ended"]
    provisioned = store.phases(second_shared)["provision"]["started"]
    assert released <= provisioned, "the shared device was provisioned for the second job while the first held it"
    assert job_results(first)["outcome"] == job_results(second)["outcome"] == "pass"


def test_a_job_the_lab_can_never_run_is_refused_at_submission(start_cluster):
    """Two children on a queue with one device: refused naming the child, nothing stored or queued."""
    from convoy.errors import JobValidationError

    q = unique_queue("only-one")
    start_cluster({q: 1})
    store = get_store()
    before = len(store.newest(10_000))
    with pytest.raises(JobValidationError) as info:
        submit_job(multi(q, q))
    assert [(e.path, e.message) for e in info.value.errors] == [
        ("provision_data.jobs[1]", f"needs a second device of queue '{q}'; 1 registered")]
    assert len(store.newest(10_000)) == before
    # the same lab runs a job that fits it
    parent = submit_job(multi(q))
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    assert_all_released(parent)
