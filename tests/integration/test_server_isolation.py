"""The attack of ``test_job_isolation.py`` repeated through ``convoy server``: a user with a token and no
Redis credentials reaches nothing of another user's job, in any protocol the server speaks.

Vera submits a MultiNode victim through the server; Mallory, with his own client, tries every route of
convoy's API, Testflinger's REST and LAVA's XML-RPC on her jobs (by their ids, and by guessing LAVA's
small job numbers), and submits through the server a job whose commands try the host-side attack of the
labs issue plus the server from inside the job.  Everything is refused or hidden; Vera's job completes
untouched.
"""
from __future__ import annotations

import json
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from convoy.coordinator.state import lavaids
from convoy.coordinator.state.connection import get_store
from convoy.tasks.run import jobuser
from helpers import unique_queue, wait_for
from serverclient import Server, add_client, start_server
from test_job_isolation import ATTACKER, ATTEMPTS, VICTIM

pytestmark = pytest.mark.integration
TIMEOUT = 120
#: what the attacker's commands also try, through the server, from inside the job
SERVER_ATTEMPTS = {"cancel-victim-via-server", "read-victim-via-server"}
THROUGH_SERVER = """\
try cancel-victim-via-server env CONVOY_SERVER={server} CONVOY_TOKEN={token} convoy cancel {victim_parent}
try read-victim-via-server sh -c 'curl -sf -H "Authorization: Bearer {token}" \
    {server}/api/v1/jobs/{victim}/results | grep -q victim'
"""


@pytest.fixture
def server(cluster_redis_url: str, tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path)


def lava_proxy(server: Server, user: str, token: str) -> xmlrpc.client.ServerProxy:
    address = urlsplit(server.base)
    return xmlrpc.client.ServerProxy(f"http://{user}:{token}@{address.netloc}/RPC2", allow_none=True)


def test_a_user_reaches_nothing_of_another_users_job_through_the_server(start_cluster, server: Server,
                                                                        cluster_redis_url: str,
                                                                        tmp_path_factory) -> None:
    reason = jobuser.unavailable()
    if reason is not None:
        pytest.skip(f"job isolation is not available here: {reason}")
    q = unique_queue("srviso")
    cluster = start_cluster({q: 2})
    suffix = q.rsplit("-", 1)[1]
    vera, mallory = f"vera-{suffix}", f"mallory-{suffix}"
    vera_token = server.login(vera, add_client(vera))["access_token"]
    mallory_token = server.login(mallory, add_client(mallory))["access_token"]

    status, body = server.call("POST", "/api/v1/jobs", {"job_queue": "multi", "provision_data": {"jobs": [
        {"job_queue": q, "test_data": {"test_cmds": VICTIM, "env": {"VICTIM_TOKEN": "victim-token-123"}}}]}},
        token=vera_token)
    assert status == 200, body
    parent = body["job_id"]
    store = get_store()  # the test looks from the lab's side; the users only through the server
    victim = wait_for(lambda: (store.children(parent) or [None])[0], 60, "the victim's child")
    victim_dir = cluster.state_dir / "jobs" / victim
    wait_for(lambda: (victim_dir / "mine.txt").exists() and store.get(victim).get("script_pgid"), 60,
             "the victim's commands running")
    # her jobs get LAVA numbers (as when she lists them with lavacli); she reads hers, Mallory will guess
    numbers = lavaids.number_jobs(store.client, [parent, victim])
    vera_rpc = lava_proxy(server, vera, vera_token)
    assert vera_rpc.scheduler.jobs.show(numbers[1])["state"] in ("Running", "Scheduled")

    # convoy's own API: every route on her jobs answers as if they did not exist
    for job_id in (parent, victim):
        for path in ("", "/status", "/results", "/labels", "/live", "/artifacts"):
            status, body = server.call("GET", f"/api/v1/jobs/{job_id}{path}", token=mallory_token)
            assert status == 404, (path, status, body)
        for path in ("/cancel", "/reservation/release"):
            assert server.call("POST", f"/api/v1/jobs/{job_id}{path}", token=mallory_token)[0] == 404
        assert server.call("POST", f"/api/v1/jobs/{job_id}/reservation/extend", {"duration": 60},
                           token=mallory_token)[0] == 404
    assert server.call("GET", "/api/v1/jobs", token=mallory_token) == (200, [])
    for path in ("/api/v1/devices", f"/api/v1/queues/{q}", f"/v1/queues/{q}/agents"):
        status, body = server.call("GET", path, token=mallory_token)
        assert status == 200 and parent not in json.dumps(body) and victim not in json.dumps(body), body
    # Testflinger's REST: nothing of hers in any answer, no cancel
    bearer = {"Authorization": f"Bearer {mallory_token}"}
    for path in (f"/v1/job/{parent}", f"/v1/result/{parent}", f"/v1/result/{victim}",
                 f"/v1/result/{victim}/log/output?start_fragment=0", f"/v1/result/{victim}/artifact",
                 f"/v1/job/{parent}/position"):
        answer = httpx.get(server.base + path, headers=bearer, timeout=30)
        assert b"victim" not in answer.content, (path, answer.status_code)
        if "/log/" in path:  # Testflinger answers an unknown job's log with an empty one
            assert "victim" not in json.dumps(answer.json()) and not _log_text(answer.json()), answer.text
        else:
            assert answer.status_code != 200, (path, answer.status_code)
    answer = httpx.post(f"{server.base}/v1/job/{parent}/action", json={"action": "cancel"}, headers=bearer,
                        timeout=30)
    assert answer.status_code != 200
    # LAVA's XML-RPC: every small number either faults or is Mallory's own
    mallory_rpc = lava_proxy(server, mallory, mallory_token)
    for number in range(1, max(numbers) + 10):
        for call in (lambda n: mallory_rpc.scheduler.jobs.show(n), lambda n: mallory_rpc.scheduler.jobs.logs(n),
                     lambda n: mallory_rpc.results.get_testjob_results_yaml(n),
                     lambda n: mallory_rpc.scheduler.jobs.cancel(n)):
            with pytest.raises(xmlrpc.client.Fault):
                call(number)

    # Mallory's job, submitted through the server, tries the host-side attack and the server from inside
    record = store.get(victim)
    victim_pid, info = int(record["script_pgid"]), record["device_info"]
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{victim_pid}/environ").read_text().split("\0")
                   if "=" in item)
    url = urlsplit(cluster_redis_url)
    script = ATTACKER.format(
        victim=victim, victim_socket=environ["CONVOY_MULTINODE_SOCKET"], victim_dir=victim_dir,
        victim_pid=victim_pid, agent_key=cluster.state_dir / "keys" / "agent_ed25519",
        victim_ip=info["device_ip"], victim_port=info.get("ssh_port", 22), password=url.password,
        state_dir=cluster.state_dir, redis_dir=tmp_path_factory.getbasetemp(), redis_host=url.hostname,
        redis_port=url.port)
    script = script.replace("echo attacker-end", THROUGH_SERVER.format(
        server=server.base, token=mallory_token, victim_parent=parent, victim=victim) + "echo attacker-end")
    status, body = server.call("POST", "/api/v1/jobs", {"job_queue": q, "test_data": {"test_cmds": script}},
                               token=mallory_token)
    assert status == 200, body
    attacker = body["job_id"]
    wait_for(lambda: server.call("GET", f"/api/v1/jobs/{attacker}/status", token=mallory_token)[1]["state"]
             == "complete", TIMEOUT, "the attacker's job complete")
    out = server.call("GET", f"/api/v1/jobs/{attacker}/results", token=mallory_token)[1]["test_output"]
    verdicts = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    tried = ATTEMPTS | SERVER_ATTEMPTS
    assert {what: verdicts.get(what) for what in tried} == {what: "denied" for what in tried}, out
    assert verdicts.get("own-dir") == "ok" and verdicts.get("own-device") == "ok", out

    # Vera's job: untouched, complete, passing, her output exactly hers
    (victim_dir / "release").touch()
    wait_for(lambda: server.call("GET", f"/api/v1/jobs/{parent}/status", token=vera_token)[1]["state"]
             == "complete", TIMEOUT, "the victim complete")
    results = server.call("GET", f"/api/v1/jobs/{parent}/results", token=vera_token)[1]
    assert results["outcome"] == "pass", results
    output = store.output(victim, "test")
    assert output.startswith("victim-begin\n") and output.endswith("victim-file: private\nvictim-end\n"), output


def _log_text(body: dict) -> str:
    """Every fragment's text of a Testflinger log answer (``{"output": {phase: {"log_data": ...}}}``)."""
    return "".join(str(part.get("log_data", "")) for part in (body.get("output") or {}).values()
                   if isinstance(part, dict))
