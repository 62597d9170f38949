"""A job's LAVA test cases in Redis: one list of JSON per job, in the order reported.

The test shell records a case per ``lava-test-case`` (and per raised
definition) as it happens; ``convoy results`` reads them back.  Recording is
one ``RPUSH``; reading is one ``LRANGE``.  Like the job's other keys, the list
lives as long as the job record (jobs are not removed); :func:`delete_cases`
is there for whoever removes a job's keys.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from convoy.config.testresults import TestCaseError, normalize_case
from convoy.coordinator.state import keys

__all__ = ["MAX_CASES", "cases", "cases_of", "delete_cases", "record_case"]


#: cases kept per job: LTP-sized suites fit (a few thousand cases), a runaway loop does not fill Redis
MAX_CASES = 50_000


def record_case(client: redis.Redis, job_id: str, case: Mapping[str, Any]) -> None:
    """Append one case to the job's results; raises ``TestCaseError`` (a ``ValueError``) naming a wrong field,
    or the job's ``MAX_CASES`` case being reached."""
    key = keys.job_testcases(job_id)
    if int(client.rpush(key, json.dumps(normalize_case(case), separators=(",", ":")))) > MAX_CASES:
        client.rpop(key)  # one round trip more, only past the limit
        raise TestCaseError("case", f"job {job_id} already has {MAX_CASES} test cases; {case.get('case')!r} "
                                    "was not recorded")


def cases(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """The job's cases in the order they were recorded ([] when none)."""
    return [json.loads(raw) for raw in client.lrange(keys.job_testcases(job_id), 0, -1)]


def cases_of(client: redis.Redis, job_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Each job's cases, in one round trip (the children of a multi job)."""
    ids = list(job_ids)
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.lrange(keys.job_testcases(job_id), 0, -1)
    return {job_id: [json.loads(raw) for raw in rows] for job_id, rows in zip(ids, pipe.execute(), strict=True)}


def delete_cases(client: redis.Redis, job_id: str) -> None:
    """Forget the job's cases (when a job's keys are removed)."""
    client.delete(keys.job_testcases(job_id))
