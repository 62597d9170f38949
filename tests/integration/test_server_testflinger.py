"""Testflinger's REST v1 on a real ``convoy server`` with a real cluster, request for request as
testflinger-cli makes them (its client.py and auth.py): HTTP Basic login at ``/v1/oauth2/token``, the
``/oidc/auth-init`` probe, ``Authorization: Bearer <token>`` on every call, submit, poll ``/v1/result``
for ``job_state`` and ``/v1/result/<id>/log/output?start_fragment=N`` for output, results, the artifact
tarball, queue position, cancel through ``/v1/job/<id>/action``, the agents of a queue; and the
refusals (bad token, someone else's job, no token where one is needed, ids that are not UUIDs).
"""
from __future__ import annotations

import base64
import contextlib
import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from convoy.coordinator.state.connection import get_store
from helpers import unique_queue, wait_for, wait_for_state
from serverclient import Server, add_client, start_server

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120
TF_PHASES = ("setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup")
#: a job that writes output over a few seconds (several polls see it grow) and leaves an artifact
WRITER = ("for i in $(seq 1 12); do echo \"line $i of the job\"; sleep 0.25; done\n"
          "mkdir -p artifacts && echo \"report of $CONVOY_JOB_ID\" > artifacts/report.txt")


@pytest.fixture
def server(cluster_redis_url: str, tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path)


def cli_login(http: httpx.Client, client_id: str, secret: str) -> str:
    """testflinger-cli's ``_authenticate_with_credentials``: Basic ``id:secret``, an empty form body."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")
    reply = http.post("/v1/oauth2/token", headers={"Authorization": f"Basic {basic}"}, data={})
    assert reply.status_code == 200, reply.text
    tokens = reply.json()
    assert tokens["access_token"] and tokens["refresh_token"]
    return str(tokens["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def poll_output(http: httpx.Client, token: str, job_id: str) -> tuple[str, list[int], set[str]]:
    """testflinger-cli's ``do_poll``: job_state from /v1/result, then the output from the next fragment on,
    until the job is complete.  The text seen, each answer's last fragment number, the states seen."""
    seen: list[str] = []
    lasts: list[int] = []
    states: set[str] = set()
    start = 0

    def step() -> bool:
        nonlocal start
        reply = http.get(f"/v1/result/{job_id}", headers=bearer(token))
        assert reply.status_code == 200, reply.text
        state = reply.json()["job_state"]
        states.add(state)
        reply = http.get(f"/v1/result/{job_id}/log/output?start_fragment={start}", headers=bearer(token))
        assert reply.status_code == 200, reply.text
        phases = reply.json()["output"]
        assert list(phases) == list(TF_PHASES)
        last = max(phases[p]["last_fragment_number"] for p in TF_PHASES)
        if last >= 0:
            # every phase's fragments lie in [start, last]: none was skipped or sent twice
            assert all(phases[p]["last_fragment_number"] >= start or phases[p]["last_fragment_number"] == -1
                       for p in TF_PHASES)
            seen.append("".join(phases[p]["log_data"] for p in TF_PHASES))
            lasts.append(last)
            start = last + 1
        return state == "complete"

    wait_for(step, JOB_TIMEOUT, f"job {job_id} complete while polling its output")
    step()  # what was written between the last read and the state turning complete
    return "".join(seen), lasts, states


def test_testflinger_cli_logs_in_submits_polls_reads_results_and_artifacts(start_cluster, server: Server) -> None:
    queue = unique_queue("tf")
    start_cluster({queue: 1})
    client_id = f"tfuser-{queue.rsplit('-', 1)[1]}"
    secret = add_client(client_id)
    with httpx.Client(base_url=server.base, timeout=30) as http:
        # no credentials: testflinger-cli probes OIDC, gets 404 and goes on without a token
        reply = http.post("/oidc/auth-init", data={})
        assert reply.status_code == 404 and reply.json()["message"]
        token = cli_login(http, client_id, secret)

        # the CLI checks the queue has online agents before submitting
        reply = http.get(f"/v1/queues/{queue}/agents", headers=bearer(token))
        assert reply.status_code == 200, reply.text
        [agent] = reply.json()
        assert agent["state"] == "waiting" and agent["queues"] == [queue] and agent["name"]
        assert set(agent) >= {"name", "state", "queues", "location", "provision_type", "job_id"}
        reply = http.get(f"/v1/queues/{queue}-none/agents", headers=bearer(token))
        assert reply.status_code == 404 and reply.json()["message"] == f"Queue '{queue}-none' does not exist."

        job = {"job_queue": queue, "tags": ["tf"], "test_data": {"test_cmds": WRITER}}
        reply = http.post("/v1/job", json=job, headers=bearer(token))
        assert reply.status_code == 200, reply.text
        assert set(reply.json()) == {"job_id"}
        job_id = reply.json()["job_id"]
        assert uuid.UUID(job_id)

        reply = http.get(f"/v1/job/{job_id}", headers=bearer(token))
        assert reply.status_code == 200, reply.text
        shown = reply.json()
        assert shown["job_id"] == job_id and shown["job_queue"] == queue and shown["tags"] == ["tf"]
        assert shown["test_data"]["test_cmds"].startswith("for i in") and shown["exclude_agents"] == []

        text, lasts, states = poll_output(http, token, job_id)
        assert "test" in states and "complete" in states
        assert len(lasts) >= 2, "the output came in more than one poll"
        assert lasts == sorted(set(lasts)), "fragment numbers only grow"

        reply = http.get(f"/v1/result/{job_id}", headers=bearer(token))
        assert reply.status_code == 200
        results = reply.json()
        assert results["job_state"] == "complete" and results["test_status"] == 0
        assert results["outcome"] == "pass"  # convoy's extra
        phase_outputs = "".join(results.get(f"{p}_output", "") for p in ("provision", "allocate", "reserve",
                                                                          "test", "cleanup"))
        assert text == phase_outputs, "the fragments joined are the job's whole output"
        assert "line 12 of the job" in results["test_output"]

        # the fragments are numbered 0..last without a gap: from each number on, exactly one fewer
        last = lasts[-1]
        events = [f for _, _, f in get_store().read_events({job_id: "0-0"}) if f.get("type") == "output"]
        assert last == len(events) - 1
        for number in range(last + 1):
            body = http.get(f"/v1/result/{job_id}/log/output", params={"start_fragment": number},
                            headers=bearer(token)).json()["output"]
            assert "".join(body[p]["log_data"] for p in TF_PHASES) == "".join(e["data"] for e in events[number:])
        body = http.get(f"/v1/result/{job_id}/log/output?start_fragment={last + 1}", headers=bearer(token)).json()
        assert all(body["output"][p] == {"last_fragment_number": -1, "log_data": ""} for p in TF_PHASES)
        only = http.get(f"/v1/result/{job_id}/log/output?phase=test&start_fragment=0", headers=bearer(token))
        assert list(only.json()["output"]) == ["test"] and only.json()["output"]["test"]["log_data"] == \
            results["test_output"]
        serial = http.get(f"/v1/result/{job_id}/log/serial", headers=bearer(token)).json()
        assert serial["serial"]["test"] == {"last_fragment_number": -1, "log_data": ""}
        assert http.get(f"/v1/result/{job_id}/log/output?start_fragment=-1", headers=bearer(token)).status_code \
            == 400
        assert http.get(f"/v1/result/{job_id}/log/console", headers=bearer(token)).status_code == 404

        # the artifacts tarball, as `testflinger artifacts` downloads it
        reply = http.get(f"/v1/result/{job_id}/artifact", headers=bearer(token))
        assert reply.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(reply.content), mode="r:gz") as tar:
            member = tar.extractfile("artifacts/report.txt")
            assert member is not None and member.read() == f"report of {job_id}\n".encode()

        # a finished job has no position and cannot be cancelled
        reply = http.get(f"/v1/job/{job_id}/position", headers=bearer(token))
        assert reply.status_code == 410 and reply.json()["message"] == "Job not found or already started\n"
        reply = http.post(f"/v1/job/{job_id}/action", json={"action": "cancel"}, headers=bearer(token))
        assert reply.status_code == 400 and reply.json()["message"] == "The job is already completed or cancelled"

        # the bare token works too; a bad token is refused everywhere (testflinger-cli then logs in again)
        assert http.get(f"/v1/result/{job_id}", headers={"Authorization": token}).status_code == 200
        for method, path in (("GET", f"/v1/result/{job_id}"), ("GET", f"/v1/job/{job_id}"),
                             ("GET", f"/v1/result/{job_id}/log/output"), ("GET", f"/v1/result/{job_id}/artifact"),
                             ("GET", f"/v1/job/{job_id}/position"), ("GET", f"/v1/queues/{queue}/agents"),
                             ("POST", "/v1/job"), ("POST", f"/v1/job/{job_id}/action")):
            reply = http.request(method, path, headers=bearer("forged"), json={"action": "cancel"}
                                 if method == "POST" else None)
            assert reply.status_code == 401, (method, path, reply.text)
            assert reply.json()["message"] and reply.headers["WWW-Authenticate"] == "Bearer"

        # without a token, someone else's job looks absent (204 as Testflinger for an unknown job)
        assert http.get(f"/v1/job/{job_id}").status_code == 204
        assert http.get(f"/v1/result/{job_id}").status_code == 204
        assert http.get(f"/v1/result/{job_id}/artifact").status_code == 204
        body = http.get(f"/v1/result/{job_id}/log/output").json()
        assert all(body["output"][p]["last_fragment_number"] == -1 for p in TF_PHASES)
        # ids that are not UUIDs: 400, as Testflinger
        for path in ("/v1/job/nope", "/v1/result/nope", "/v1/result/nope/artifact", "/v1/job/nope/position",
                     "/v1/result/nope/log/output"):
            assert http.get(path, headers=bearer(token)).status_code == 400, path
        unknown = str(uuid.uuid4())
        assert http.get(f"/v1/job/{unknown}", headers=bearer(token)).status_code == 204
        assert http.get(f"/v1/result/{unknown}", headers=bearer(token)).status_code == 204


def test_position_of_waiting_jobs_and_cancel_through_the_action(start_cluster, server: Server) -> None:
    queue = unique_queue("tfwait")
    start_cluster({queue: 1})
    suffix = queue.rsplit("-", 1)[1]
    alice, bob = f"tfalice-{suffix}", f"tfbob-{suffix}"
    alice_secret, bob_secret = add_client(alice), add_client(bob)
    with httpx.Client(base_url=server.base, timeout=30) as http:
        token, bob_token = cli_login(http, alice, alice_secret), cli_login(http, bob, bob_secret)

        def submit(cmds: str) -> str:
            reply = http.post("/v1/job", json={"job_queue": queue, "test_data": {"test_cmds": cmds}},
                              headers=bearer(token))
            assert reply.status_code == 200, reply.text
            return str(reply.json()["job_id"])

        busy = submit("sleep 600")  # holds the only device until it is cancelled
        second, third = submit("echo second"), submit("echo third")
        try:
            wait_for_state(busy, "test", JOB_TIMEOUT)
            reply = http.get(f"/v1/queues/{queue}/agents", headers=bearer(token))
            assert [(a["state"], a["job_id"]) for a in reply.json()] == [("test", busy)]

            # the CLI prints "next in line" for 0, else how many are ahead; int() of the body
            reply = http.get(f"/v1/job/{second}/position", headers=bearer(token))
            assert reply.status_code == 200 and int(reply.text) == 0
            assert int(http.get(f"/v1/job/{third}/position", headers=bearer(token)).text) == 1
            assert http.get(f"/v1/job/{busy}/position", headers=bearer(token)).status_code == 410
            assert http.get(f"/v1/job/{second}/position", headers=bearer(bob_token)).status_code == 410
            reply = http.get(f"/v1/result/{second}", headers=bearer(token))
            assert reply.json()["job_state"] == "waiting"

            # only cancel is an action; a token is needed; another client's job cannot be cancelled
            reply = http.post(f"/v1/job/{second}/action", json={"action": "pause"}, headers=bearer(token))
            assert reply.status_code == 422
            assert reply.json()["detail"]["json"] == {"action": ["Must be one of: cancel."]}
            reply = http.post(f"/v1/job/{second}/action", json={}, headers=bearer(token))
            assert reply.status_code == 422 and "action" in reply.json()["detail"]["json"]
            assert http.post(f"/v1/job/{second}/action", json={"action": "cancel"}).status_code == 401
            reply = http.post(f"/v1/job/{second}/action", json={"action": "cancel"}, headers=bearer(bob_token))
            assert reply.status_code == 400
            assert http.post("/v1/job/nope/action", json={"action": "cancel"}, headers=bearer(token)).status_code \
                == 400
            assert get_store().state(second) == "waiting"

            reply = http.post(f"/v1/job/{second}/action", json={"action": "cancel"}, headers=bearer(token))
            assert reply.status_code == 200 and reply.json() == "OK"
            assert http.get(f"/v1/result/{second}", headers=bearer(token)).json()["job_state"] == "cancelled"
            assert http.get(f"/v1/job/{second}/position", headers=bearer(token)).status_code == 410
            assert int(http.get(f"/v1/job/{third}/position", headers=bearer(token)).text) == 0
            reply = http.post(f"/v1/job/{second}/action", json={"action": "cancel"}, headers=bearer(token))
            assert reply.status_code == 400 and reply.json()["message"] == \
                "The job is already completed or cancelled"
            assert http.get(f"/v1/result/{second}/artifact", headers=bearer(token)).status_code == 204

            # a running job is cancelled the same way
            reply = http.post(f"/v1/job/{busy}/action", json={"action": "cancel"}, headers=bearer(token))
            assert reply.status_code == 200
            wait_for_state(busy, "cancelled", JOB_TIMEOUT)
        finally:
            store = get_store()
            for job_id in (busy, second, third):
                if store.state(job_id) not in ("complete", "cancelled"):
                    http.post(f"/v1/job/{job_id}/action", json={"action": "cancel"}, headers=bearer(token))


def test_refusals_where_testflinger_refuses(start_cluster, cluster_redis_url: str, tmp_path: Path) -> None:
    queue = unique_queue("tfdeny")
    start_cluster({queue: 1})
    client_id = f"tflimited-{queue.rsplit('-', 1)[1]}"
    secret = add_client(client_id)
    with contextlib.closing(start_server(tmp_path, "--no-anonymous-submit")) as running, \
            httpx.Client(base_url=next(running).base, timeout=30) as http:
        job = {"job_queue": queue, "test_data": {"test_cmds": "true"}}
        reply = http.post("/v1/job", json=job)
        assert reply.status_code == 401 and reply.json()["message"]
        token = cli_login(http, client_id, secret)
        # a job is checked whole: 422 names each field as testflinger-cli prints them
        reply = http.post("/v1/job", json={"test_data": {"test_cmds": 3}}, headers=bearer(token))
        assert reply.status_code == 422
        fields = reply.json()["detail"]["json"]
        assert "job_queue" in fields and "test_data.test_cmds" in fields
        reply = http.post("/v1/job", json=["not", "a", "job"], headers=bearer(token))
        assert reply.status_code == 422 and "_schema" in reply.json()["detail"]["json"]
        reply = http.post("/v1/job", content=b"{not json", headers={**bearer(token),
                                                                     "Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["message"] == "Invalid JSON body."
        # above the client's limits: 403 naming the limit
        reply = http.post("/v1/job", json={**job, "job_priority": 50}, headers=bearer(token))
        assert reply.status_code == 403 and "max_priority" in reply.json()["message"]
        assert reply.json()["errors"][0]["field"] == "job_priority"
        # accepted: the client's own, it runs to the end
        reply = http.post("/v1/job", json=job, headers=bearer(token))
        assert reply.status_code == 200
        wait_for_state(reply.json()["job_id"], "complete", JOB_TIMEOUT)
