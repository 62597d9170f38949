"""The coordinator deciding for the lab SIGKILLed: another coordinator takes over the scheduler lease.

Two coordinators run (the embedded cluster's own and a ``convoy coordinator``);
exactly one holds the scheduler lease. Killing that one by pid leaves the
other to decide: jobs submitted afterwards still start and complete.
"""
from __future__ import annotations

import json
import os
import signal

import pytest

from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import get_store
from helpers import unique_queue, wait_for

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120


def lease_holder() -> int | None:
    token = get_store().client.get(keys.SCHEDULER_LEASE)
    return int(json.loads(token)["pid"]) if token else None


def test_the_scheduler_moves_to_another_coordinator_when_its_holder_is_killed(start_cluster, coordinator_process):
    q = unique_queue("failover")
    start_cluster({q: 2})
    first = wait_for(lease_holder, 30, "a scheduler holding the lease")
    before = submit_job({"job_queue": q, "test_data": {"test_cmds": "true"}})
    assert wait_for_job(before, timeout=JOB_TIMEOUT) == "complete"

    os.kill(first, signal.SIGKILL)
    # another coordinator (or the restarted one) takes the lease: the holder's pid is gone, or its lease runs out
    wait_for(lambda: lease_holder() not in (None, first), 60, "another process holding the scheduler lease")
    after = [submit_job({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": q}, {"job_queue": q}]},
                         "test_data": {"test_cmds": "true"}}) for _ in range(2)]
    for job_id in after:
        assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
        assert job_results(job_id)["outcome"] == "pass"
