"""LAVA-style test results in Redis, ``job_results`` and ``convoy results --junit`` (real Redis, real CLI)."""
from __future__ import annotations

import pytest

from convoy.config.testresults import TestCaseError
from convoy.coordinator.state.testcases import cases, cases_of, delete_cases, record_case

pytestmark = pytest.mark.integration


def test_cases_are_kept_in_the_order_reported_and_deleted_with_the_job(redis_client):
    record_case(redis_client, "job-1", {"suite": "0_a", "case": "one", "result": "pass"})
    record_case(redis_client, "job-1", {"suite": "1_b", "case": "two", "result": "fail",
                                        "measurement": "7", "units": "ms"})
    record_case(redis_client, "job-1", {"suite": "0_a", "case": "three", "result": "skip"})
    assert [c["case"] for c in cases(redis_client, "job-1")] == ["one", "two", "three"]
    assert cases(redis_client, "job-1")[1]["measurement"] == "7"
    assert cases_of(redis_client, ["job-1", "job-2"])["job-2"] == []
    with pytest.raises(TestCaseError, match="result"):
        record_case(redis_client, "job-1", {"suite": "0_a", "case": "x", "result": "ok"})
    assert len(cases(redis_client, "job-1")) == 3
    delete_cases(redis_client, "job-1")
    assert cases(redis_client, "job-1") == []
