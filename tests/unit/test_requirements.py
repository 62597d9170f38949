"""What a job asks of the lab, read from its normalised document (pure: no Redis)."""
from __future__ import annotations

import pytest

from convoy.config.jobs import validate_job
from convoy.coordinator.scheduling.model import Requirement
from convoy.coordinator.scheduling.requirements import requirements, waiting_job


def lava(roles: dict, **top: object) -> dict:
    return validate_job({"job_name": "t", "device_type": "qemu", "visibility": "public",
                         "timeouts": {"job": {"minutes": 5}},
                         "protocols": {"lava-multinode": {"roles": roles, "timeout": {"minutes": 5}}},
                         "actions": [{"test": {"timeout": {"minutes": 1}, "definitions": [{
                             "from": "inline", "name": "x", "path": "x.yaml", "repository": {
                                 "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "x"},
                                 "run": {"steps": ["true"]}}}], "role": list(roles)}}], **top})


@pytest.mark.parametrize("job, expected", [
    # a Testflinger single job: one device of its queue, minus exclude_agents
    ({"job_queue": "rpi4b", "exclude_agents": ["rpi-3"]},
     [(None, Requirement(queue="rpi4b", exclude=frozenset({"rpi-3"}), label="job_queue"))]),
    # a multi job: one per child, in order; a parent's exclude_agents applies to every child;
    # Testflinger tags are labels, not requirements
    ({"job_queue": "multi", "exclude_agents": ["x1"], "tags": ["nightly"], "provision_data": {"jobs": [
        {"job_queue": "a", "tags": ["ci"]}, {"job_queue": "b", "exclude_agents": ["b2"]}]}},
     [(0, Requirement(queue="a", exclude=frozenset({"x1"}), label="provision_data.jobs[0]")),
      (1, Requirement(queue="b", exclude=frozenset({"x1", "b2"}), label="provision_data.jobs[1]"))]),
    # a secondary connection needs no device
    ({"job_queue": "multi", "provision_data": {"jobs": [
        {"job_queue": "a", "role": "host"}, {"role": "guest", "connection": "ssh", "host_role": "host"}]}},
     [(0, Requirement(queue="a", label="provision_data.jobs[0]"))]),
])
def test_testflinger_requirements(job, expected):
    assert requirements(validate_job(job)) == expected


def test_a_lava_role_asks_for_count_devices_of_its_type_with_all_its_tags():
    job = lava({"server": {"device_type": "qemu", "count": 1, "tags": ["gpu"]},
                "client": {"device_type": "bbb", "count": 2}})
    assert [r for _, r in requirements(job)] == [
        Requirement(device_type="qemu", tags=frozenset({"gpu"}), label="role server"),
        Requirement(device_type="bbb", label="role client"),
        Requirement(device_type="bbb", label="role client"),
    ]


@pytest.mark.parametrize("priority, expected", [("high", 100), ("medium", 50), ("low", 0), (73, 73)])
def test_lava_priority_becomes_job_priority(priority, expected):
    job = lava({"a": {"device_type": "qemu", "count": 1}, "b": {"device_type": "qemu", "count": 1}},
               priority=priority)
    assert job["job_priority"] == expected
    assert waiting_job("j", job, 1.0).priority == expected


def test_testflinger_priorities_are_not_capped_at_celerys_range():
    assert waiting_job("j", validate_job({"job_queue": "q", "job_priority": 200}), 0.0).priority == 200
    assert waiting_job("j", validate_job({"job_queue": "q"}), 0.0).priority == 0
