"""The real ``convoy server`` process over HTTP, with a real cluster behind it.

Clients are made with the real ``convoy clients`` command; requests go through the standard library's HTTP
client to a server on a free loopback port.  Covered: login (HTTP Basic and JSON) and refresh, submit →
status → complete → results, 401 without a token, 403 above ``max_priority`` and ``max_reservation_time``,
422 naming an invalid field, one client not seeing or cancelling another's job, tokens expiring and dying
with their client.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from convoy.coordinator.state import clients
from helpers import CONVOY, unique_queue, wait_for
from serverclient import Server, add_client, start_server

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120


@pytest.fixture
def server(cluster_redis_url: str, tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path)


@pytest.fixture
def short_tokens(cluster_redis_url: str, tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path, "--token-ttl", "10")


def test_a_client_submits_follows_and_reads_its_job_and_nobody_else_does(start_cluster, server: Server) -> None:
    queue = unique_queue("server")
    start_cluster({queue: 1})
    suffix = queue.rsplit("-", 1)[1]
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    alice_secret = add_client(alice, "--max-priority", f"{queue}=5", "--max-reservation-time", f"{queue}=1h")
    bob_secret = add_client(bob)

    # OpenAPI generated from the code, at the root of the host
    status, spec = server.call("GET", "/openapi.json")
    assert status == 200 and "/api/v1/jobs" in spec["paths"] and "/v1/oauth2/token" in spec["paths"]

    # login: HTTP Basic (as testflinger-cli) or JSON; a wrong secret is refused
    tokens = server.login(alice, alice_secret)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0 and tokens["refresh_token"]
    status, body = server.call("POST", "/v1/oauth2/token", {"client_id": bob, "secret_key": bob_secret})
    assert status == 200
    bob_token = body["access_token"]
    assert server.call("POST", "/v1/oauth2/token", {"client_id": alice, "secret_key": "wrong"})[0] == 401
    assert server.call("POST", "/v1/oauth2/token", {"client_id": "nobody", "secret_key": "x"})[0] == 401
    status, refreshed = server.call("POST", "/v1/oauth2/refresh", {"refresh_token": tokens["refresh_token"]})
    assert status == 200 and refreshed["access_token"] != tokens["access_token"]
    assert server.call("POST", "/v1/oauth2/refresh", {"refresh_token": "forged"})[0] == 400
    token = refreshed["access_token"]

    # submit, follow to complete, read the results
    job = {"job_queue": queue, "job_priority": 5, "test_data": {"test_cmds": "echo hello from the server"}}
    status, body = server.call("POST", "/api/v1/jobs", job, token=token)
    assert status == 200, body
    job_id = body["job_id"]
    assert body["submitted_by"] == alice

    def complete() -> bool:
        status, body = server.call("GET", f"/api/v1/jobs/{job_id}/status", token=token)
        assert status == 200, body
        return body["state"] == "complete"

    wait_for(complete, JOB_TIMEOUT, f"job {job_id} complete")
    status, results = server.call("GET", f"/api/v1/jobs/{job_id}/results", token=token)
    assert status == 200 and results["outcome"] == "pass"
    assert "hello from the server" in results["test_output"]
    status, record = server.call("GET", f"/api/v1/jobs/{job_id}", token=token)
    assert status == 200 and record["submitted_by"] == alice and record["state"] == "complete"
    status, listed = server.call("GET", "/api/v1/jobs", token=token)
    assert status == 200 and [j["job_id"] for j in listed] == [job_id]

    # 403 above a limit, naming it; nothing queued
    for too_much, field, limit in (
            ({**job, "job_priority": 6}, "job_priority", "max_priority 5"),
            ({**job, "reserve_data": {"ssh_keys": ["lp:someone"], "timeout": 3601}}, "reserve_data.timeout",
             "max_reservation_time 3600s")):
        status, body = server.call("POST", "/api/v1/jobs", too_much, token=token)
        assert status == 403, body
        assert [e["field"] for e in body["errors"]] == [field] and limit in body["errors"][0]["message"]
    assert server.call("POST", "/api/v1/jobs", {**job, "job_priority": 1}, token=bob_token)[0] == 403
    assert server.call("GET", "/api/v1/jobs", token=token)[1][0]["job_id"] == job_id  # still only the first

    # 422 naming the invalid field
    status, body = server.call("POST", "/api/v1/jobs", {"job_queue": queue, "global_timeout": "soon"}, token=token)
    assert status == 422 and [e["field"] for e in body["errors"]] == ["global_timeout"]

    # another client sees nothing of alice's job, and cannot cancel it
    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/status", f"/api/v1/jobs/{job_id}/results"):
        assert server.call("GET", path, token=bob_token)[0] == 404
    assert server.call("POST", f"/api/v1/jobs/{job_id}/cancel", token=bob_token)[0] == 404
    assert server.call("GET", "/api/v1/jobs", token=bob_token) == (200, [])

    # without a token: protected routes 401, someone's job invisible, a forged token 401
    assert server.call("GET", "/api/v1/jobs")[0] == 401
    assert server.call("POST", f"/api/v1/jobs/{job_id}/cancel")[0] == 401
    assert server.call("GET", f"/api/v1/jobs/{job_id}/results")[0] == 404
    assert server.call("GET", "/api/v1/jobs", token="forged")[0] == 401

    # anonymous: submits with the defaults (no priority), reads its job by id, cannot cancel it
    assert server.call("POST", "/api/v1/jobs", job)[0] == 403
    status, body = server.call("POST", "/api/v1/jobs", {**job, "job_priority": 0})
    assert status == 200 and body["submitted_by"] == "anonymous"
    anon_job = body["job_id"]
    assert server.call("GET", f"/api/v1/jobs/{anon_job}/status")[0] == 200
    assert server.call("POST", f"/api/v1/jobs/{anon_job}/cancel")[0] == 401
    assert server.call("GET", f"/api/v1/jobs/{anon_job}/status", token=token)[0] == 404

    # the lab, for everyone
    status, queues = server.call("GET", "/api/v1/queues")
    assert status == 200 and queue in [q["queue"] for q in queues]
    status, devices = server.call("GET", "/api/v1/devices")
    assert status == 200 and any(queue in d["queues"] for d in devices)


def test_tokens_expire_and_die_with_their_client(short_tokens: Server, cluster_redis_url: str) -> None:
    client_id = unique_queue("expiring")
    secret = add_client(client_id)
    tokens = short_tokens.login(client_id, secret)
    assert tokens["expires_in"] == 10
    assert short_tokens.call("GET", "/api/v1/jobs", token=tokens["access_token"]) == (200, [])

    r = redis_lib.Redis.from_url(cluster_redis_url, decode_responses=True)
    assert clients.client_for_token(r, tokens["access_token"]) is not None
    started = time.monotonic()
    wait_for(lambda: short_tokens.call("GET", "/api/v1/jobs", token=tokens["access_token"])[0] == 401, 20,
             "the access token expiring")
    assert time.monotonic() - started > 5  # it lived (about) its 10 s, not less
    status, body = short_tokens.call("POST", "/v1/oauth2/refresh", {"refresh_token": tokens["refresh_token"]})
    assert status == 200 and short_tokens.call("GET", "/api/v1/jobs", token=body["access_token"]) == (200, [])

    removed = subprocess.run([CONVOY, "clients", "remove", client_id], capture_output=True, text=True, timeout=30)
    assert removed.returncode == 0, removed.stderr
    assert short_tokens.call("GET", "/api/v1/jobs", token=body["access_token"])[0] == 401
    assert short_tokens.call("POST", "/v1/oauth2/refresh", {"refresh_token": tokens["refresh_token"]})[0] == 400
    listed = subprocess.run([CONVOY, "clients", "list"], capture_output=True, text=True, timeout=30)
    assert client_id not in [c["client_id"] for c in json.loads(listed.stdout)]
    r.close()


def test_restricted_queues_bind_every_child_and_a_resubmission_queues_nothing_new(start_cluster, server: Server
                                                                                  ) -> None:
    open_queue, lab_queue = unique_queue("open"), unique_queue("labonly")
    start_cluster({open_queue: 1, lab_queue: 1})
    restrict = subprocess.run([CONVOY, "restricted-queues", "add", lab_queue], capture_output=True, text=True,
                              timeout=30)
    assert restrict.returncode == 0, restrict.stderr
    listed = subprocess.run([CONVOY, "restricted-queues", "list"], capture_output=True, text=True, timeout=30)
    assert lab_queue in listed.stdout.split()
    dave = f"dave-{lab_queue.rsplit('-', 1)[1]}"
    token = server.login(dave, add_client(dave))["access_token"]
    group = {"job_queue": "multi", "provision_data": {"jobs": [
        {"job_queue": open_queue, "test_data": {"test_cmds": "echo open"}},
        {"job_queue": lab_queue, "test_data": {"test_cmds": "echo lab"}}]}}

    # without the right: the queue refused, a child refused at its own path; nothing queued
    status, body = server.call("POST", "/api/v1/jobs", {"job_queue": lab_queue}, token=token)
    assert status == 403 and [e["field"] for e in body["errors"]] == ["job_queue"], body
    assert f"{lab_queue!r} is restricted" in body["errors"][0]["message"]
    status, body = server.call("POST", "/api/v1/jobs", group, token=token)
    assert status == 403 and [e["field"] for e in body["errors"]] == ["provision_data.jobs[1].job_queue"], body
    assert server.call("POST", "/api/v1/jobs", {"job_queue": lab_queue})[0] == 403  # anonymous: no right either
    assert server.call("GET", "/api/v1/jobs", token=token) == (200, [])

    # with the right: the whole group runs
    allowed = subprocess.run([CONVOY, "clients", "set", dave, "--allow-queue", lab_queue], capture_output=True,
                             text=True, timeout=30)
    assert allowed.returncode == 0, allowed.stderr
    status, body = server.call("POST", "/api/v1/jobs", group, token=token)
    assert status == 200, body
    group_id = body["job_id"]

    # the same submission sent again (its answer lost): the first job's id, no second job
    single = {"job_queue": open_queue, "test_data": {"test_cmds": "echo once"}}
    first = server.call("POST", "/api/v1/jobs", single, token=token, headers={"Idempotency-Key": "try-1"})
    again = server.call("POST", "/api/v1/jobs", single, token=token, headers={"Idempotency-Key": "try-1"})
    assert first[0] == again[0] == 200 and first[1]["job_id"] == again[1]["job_id"]
    listed_jobs = server.call("GET", "/api/v1/jobs", token=token)[1]
    assert sorted(j["job_id"] for j in listed_jobs) == sorted([group_id, first[1]["job_id"]])

    def complete(job_id: str) -> bool:
        return bool(server.call("GET", f"/api/v1/jobs/{job_id}/status", token=token)[1]["state"] == "complete")

    for job_id in (group_id, first[1]["job_id"]):
        wait_for(lambda: complete(job_id), JOB_TIMEOUT, f"job {job_id} complete")  # noqa: B023 (waited on here)
    status, results = server.call("GET", f"/api/v1/jobs/{group_id}/results", token=token)
    assert results["outcome"] == "pass" and [c["submitted_by"] for c in
                                             (server.call("GET", f"/api/v1/jobs/{c['job_id']}", token=token)[1]
                                              for c in results["children"])] == [dave, dave]
