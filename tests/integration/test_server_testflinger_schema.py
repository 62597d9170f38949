"""Testflinger's own OpenAPI description of ``POST /v1/job`` (tests/data/peer_jobs/testflinger/openapi.json,
a byte-for-byte copy of canonical/testflinger server/schemas/openapi.json) drives schemathesis against a
real ``convoy server``: jobs generated from the schema (positive) are all accepted with Testflinger's
``{"job_id"}``; documents that break it (negative: wrong types, missing or unknown fields, not JSON) are
all refused with a 4xx whose ``detail.json`` names the field; no answer is a 5xx and every answer
conforms to the schema's responses.

Where convoy deliberately takes less than Testflinger (it says so with a 422 naming the field, as a
negative case here), the schema is narrowed first (``convoy_subset``, each change with its reason), so
that "valid" means "valid for Testflinger and runnable by convoy" and "invalid" means "refused by both".
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
)

from convoy.coordinator.state.connection import get_store
from helpers import unique_queue, wait_for_state
from serverclient import Server, add_client, start_server

pytestmark = pytest.mark.integration
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "peer_jobs" / "testflinger" / "openapi.json"
EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 120}
#: fixed examples (CI runs the same ones every time), no example database, a reproducible blob on failure
CHECKED = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                   suppress_health_check=list(HealthCheck))


def convoy_subset(raw: dict[str, Any], queue: str, mode: GenerationMode) -> dict[str, Any]:
    """Testflinger's schema, only ``POST /v1/job``, narrowed to the jobs convoy runs.

    For negative data the durations are left out: convoy takes any duration (``"3600"``, ``"2h30m"``,
    ``0.5``) where Testflinger's schema says integer seconds, a superset a generator would call invalid."""
    spec = copy.deepcopy(raw)
    spec["paths"] = {"/v1/job": {"post": raw["paths"]["/v1/job"]["post"]}}
    spec["paths"]["/v1/job"]["post"]["requestBody"]["required"] = True  # job_queue is required: no body, no job
    schemas = spec["components"]["schemas"]
    job = schemas["Job"]["properties"]
    # convoy refuses a queue no device serves (Testflinger queues it forever): the test cluster's queue
    job["job_queue"] = {"type": "string", "enum": [queue]}
    # not run by convoy (refused naming the field): resubmission under a given id, parent ids (set by convoy),
    # Testflinger's debug and status webhook, the firmware_update phase, allocation_timeout outside a multi
    # job, allocate_data keys other than convoy's own, attachments, test_password, secrets (convoy's secret
    # names must be environment variable names, which OpenAPI 3.0 cannot say of keys)
    for name in ("job_id", "parent_job_id", "debug", "job_status_webhook", "firmware_update_data",
                 "allocation_timeout", "allocate_data"):
        del job[name]
    test = schemas["TestData"]["properties"]
    for name in ("attachments", "test_password", "secrets"):
        del test[name]
    job["job_priority"] = {"type": "integer", "minimum": 0}
    timeout = {"type": "integer", "minimum": 1, "maximum": 365 * 86400}  # convoy: positive, at most a year
    job["global_timeout"] = {**timeout, "nullable": True}  # convoy: null is the default
    job["output_timeout"] = timeout
    # convoy also takes test_cmds as a list of commands; user names as useradd takes them
    test["test_cmds"] = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    test["test_username"] = {"type": "string", "pattern": "^[a-z_][a-z0-9_-]{0,31}$", "nullable": True}
    # a reservation needs at least one key of a real account name
    reserve = schemas["ReserveData"]
    reserve["required"] = ["ssh_keys"]
    reserve["properties"]["ssh_keys"] = {"type": "array", "minItems": 1, "items": {
        "type": "string", "pattern": "^(lp|gh):[A-Za-z0-9][A-Za-z0-9-]{0,38}$"}}
    reserve["properties"]["timeout"] = {**timeout, "nullable": True}  # nullable in Testflinger's schema too
    if mode == GenerationMode.NEGATIVE:
        del job["global_timeout"], job["output_timeout"], reserve["properties"]["timeout"]
    return spec


@pytest.fixture
def server(cluster_redis_url: str, tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path)


def test_job_submission_follows_testflingers_schema(start_cluster, server: Server) -> None:
    queue = unique_queue("tfschema")
    start_cluster({queue: 1})
    admin = f"tfadmin-{queue.rsplit('-', 1)[1]}"  # no priority or reservation limits: the schema is the rule
    secret = add_client(admin, "--admin")
    token = server.login(admin, secret)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    raw = json.loads(SCHEMA.read_text())
    operations = {}
    for mode in GenerationMode:
        schema = schemathesis.openapi.from_dict(convoy_subset(raw, queue, mode))
        schema.config.generation.update(allow_x00=False)  # convoy refuses NUL characters in any string
        operations[mode] = schema["/v1/job"]["POST"]
    store = get_store()

    with httpx.Client(base_url=server.base, timeout=30, headers=headers) as http:
        # the device is kept busy: accepted jobs wait, and each is cancelled at once
        reply = http.post("/v1/job", json={"job_queue": queue, "test_data": {"test_cmds": "sleep 600"}})
        assert reply.status_code == 200, reply.text
        blocker = reply.json()["job_id"]
        wait_for_state(blocker, "test", 120)
        accepted: list[str] = []
        try:
            @settings(CHECKED, max_examples=EXAMPLES[GenerationMode.POSITIVE])
            @given(case=operations[GenerationMode.POSITIVE].as_strategy(generation_mode=GenerationMode.POSITIVE))
            def valid_jobs_are_accepted(case: schemathesis.Case) -> None:
                response = case.call(base_url=server.base, headers=headers)
                assert response.status_code == 200, (case.body, response.text)
                case.validate_response(response, checks=[response_schema_conformance, positive_data_acceptance],
                                       headers=headers)
                job_id = response.json()["job_id"]
                accepted.append(job_id)
                cancelled = http.post(f"/v1/job/{job_id}/action", json={"action": "cancel"})
                assert cancelled.status_code == 200, cancelled.text

            @settings(CHECKED, max_examples=EXAMPLES[GenerationMode.NEGATIVE])
            @given(case=operations[GenerationMode.NEGATIVE].as_strategy(generation_mode=GenerationMode.NEGATIVE))
            def invalid_jobs_are_refused_naming_the_field(case: schemathesis.Case) -> None:
                response = case.call(base_url=server.base, headers=headers)
                if response.status_code == 200:  # wrongly taken: cancel it before failing
                    http.post(f"/v1/job/{response.json()['job_id']}/action", json={"action": "cancel"})
                # 422 naming the fields; 400 for a body that is not JSON at all (naming the body, _schema)
                assert response.status_code in (400, 422), (case.body, response.status_code, response.text)
                case.validate_response(response, checks=[response_schema_conformance, negative_data_rejection],
                                       headers=headers)
                named = response.json()["detail"]["json"]
                assert named and all(isinstance(m, list) and m for m in named.values()), response.text

            valid_jobs_are_accepted()
            assert accepted and all(store.state(j) == "cancelled" for j in accepted)
            before = len(store.newest(100_000))
            invalid_jobs_are_refused_naming_the_field()
            assert len(store.newest(100_000)) == before, "a refused job queued nothing"
        finally:
            for job_id in [blocker, *accepted]:
                if store.state(job_id) not in ("complete", "cancelled"):
                    http.post(f"/v1/job/{job_id}/action", json={"action": "cancel"})
        wait_for_state(blocker, "cancelled", 120)
