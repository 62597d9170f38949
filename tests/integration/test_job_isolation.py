"""Two users' jobs on one host, both submitted through ``convoy server``: the attacker reaches nothing of
the victim's job, from inside his job or through the server.

Vera's job, a MultiNode group of one, holds a message of its group and a file while Mallory tries:

* through the server, with his own client's token and no Redis credentials: every route of convoy's API,
  Testflinger's REST and LAVA's XML-RPC on her jobs (by their ids, and by guessing LAVA's small job
  numbers): all refused, or answered as if her jobs did not exist;
* from inside his own job (submitted through the server), its test_cmds: her files, environment, device,
  processes and group's messages, the host's agent key, Redis, and the server with his token: each
  step fails.

Vera's job completes untouched.  Each job's commands run as their own uid in a user namespace
(tasks/run/jobuser.py): where the platform does not allow it (not root, no unprivileged user
namespaces) this test is skipped, saying why.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
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

pytestmark = pytest.mark.integration
TIMEOUT = 120

ATTEMPTS = {"list-victim-dir", "read-victim-file", "write-victim-file", "read-victim-environ",
            "find-redis-in-any-environ", "read-agent-key", "ssh-victim-device", "kill-victim",
            "redis-in-own-env", "secret-in-own-env", "write-redis", "read-redis-config", "cancel-victim",
            "rewrite-victim-record", "read-victim-group"}

VICTIM = textwrap.dedent("""\
    echo victim-begin
    lava-send victim-msg note=victim-group-secret
    echo private > mine.txt
    i=0
    while [ ! -e release ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
    echo "victim-file: $(cat mine.txt)"
    echo victim-end
""")

ATTACKER = textwrap.dedent("""\
    set +e
    try() {{ what=$1; shift; if "$@" >/dev/null 2>&1; then echo "$what: ALLOWED"; else echo "$what: denied"; fi; }}
    try list-victim-dir ls {victim_dir}
    try read-victim-file cat {victim_dir}/mine.txt
    try write-victim-file sh -c 'echo forged > {victim_dir}/mine.txt'
    try read-victim-environ grep -a -q victim-token-123 /proc/{victim_pid}/environ
    try find-redis-in-any-environ sh -c 'cat /proc/[0-9]*/environ 2>/dev/null | tr "\\\\0" "\\\\n" | grep -q -i redis'
    try read-agent-key cat {agent_key}
    try ssh-victim-device ssh -i {agent_key} -p {victim_port} -o ConnectTimeout=5 ubuntu@{victim_ip} true
    try kill-victim kill -TERM -{victim_pid}
    try redis-in-own-env sh -c 'env | grep -q -i -e redis -e CONVOY_STATE_DIR -e CONVOY_BROKER'
    try secret-in-own-env sh -c 'env | grep -q -i -e password -e {password}'
    try write-redis python3 -c '
    import socket
    s = socket.create_connection(("{redis_host}", {redis_port}), timeout=5)
    s.sendall(b"SET attacker-was-here 1\\r\\n")
    raise SystemExit(0 if s.recv(64).startswith(b"+OK") else 1)'
    try cancel-victim env CONVOY_REDIS_URL=redis://{redis_host}:{redis_port}/1 convoy cancel {victim}
    try rewrite-victim-record python3 -c '
    import socket
    s = socket.create_connection(("{redis_host}", {redis_port}), timeout=5)
    s.sendall(b"HSET convoy:job:{victim} outcome fail\r\n")
    raise SystemExit(0 if s.recv(64).startswith(b":") else 1)'
    try read-victim-group sh -c 'CONVOY_MULTINODE_SOCKET={victim_socket} lava-wait --timeout 5 victim-msg \
        && grep -q victim-group-secret /tmp/lava_multi_node_cache.txt'
    try read-redis-config sh -c 'grep -r -l -e requirepass -e {password} {state_dir} {redis_dir} \
        | grep -v "^$HOME/" | grep -q .'
    echo "own-uid: $(id -u)"
    echo mine > own.txt && echo "own-dir: ok"
    ssh ubuntu@$DEVICE_IP true && echo "own-device: ok"
    echo attacker-end
""")


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


def test_a_job_cannot_touch_another_job_and_its_user_reaches_nothing_of_it(
        start_cluster, server: Server, cluster_redis_url: str, tmp_path_factory) -> None:
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
    # seen from the host: the victim's directory is its own uid's alone, and so are its processes
    st = victim_dir.stat()
    victim_uid = st.st_uid
    assert victim_uid >= jobuser.uid_base() and st.st_mode & 0o777 == 0o700
    victim_pid = int(store.get(victim)["script_pgid"])
    assert int(Path(f"/proc/{victim_pid}/status").read_text().split("Uid:")[1].split()[0]) == victim_uid
    assert urlsplit(cluster_redis_url).password, "the cluster's Redis has a password"
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
    # the attacker's own commands worked: root in their namespace, their directory and device reachable
    assert (verdicts.get("own-uid"), verdicts.get("own-dir"), verdicts.get("own-device")) == ("0", "ok", "ok"), out
    assert not store.client.exists("attacker-was-here")
    # the control: the same call through the victim's relay works for whoever may open its socket (root)
    cache = tmp_path_factory.mktemp("control") / "cache.txt"
    control = subprocess.run([str(Path(sys.executable).parent / "lava-wait"), "--timeout", "5", "victim-msg"],
                             env={**os.environ, "CONVOY_MULTINODE_SOCKET": environ["CONVOY_MULTINODE_SOCKET"],
                                  "CONVOY_MULTINODE_CACHE": str(cache)}, capture_output=True, text=True, timeout=30)
    assert control.returncode == 0 and "victim-group-secret" in cache.read_text(), control.stderr

    # Vera's job: untouched, complete, passing, her output exactly hers
    (victim_dir / "release").touch()
    wait_for(lambda: server.call("GET", f"/api/v1/jobs/{parent}/status", token=vera_token)[1]["state"]
             == "complete", TIMEOUT, "the victim complete")
    results = server.call("GET", f"/api/v1/jobs/{parent}/results", token=vera_token)[1]
    assert results["outcome"] == "pass", results
    output = store.output(victim, "test")
    assert output.startswith("victim-begin\n") and output.endswith("victim-file: private\nvictim-end\n"), output
    # after the job, its directory is root's again, and no process of its uid is left
    assert victim_dir.stat().st_uid == 0
    assert not jobuser.uid_pids(victim_uid)
    assert os.environ.get("CONVOY_REDIS_URL") == cluster_redis_url


def _log_text(body: dict) -> str:
    """Every fragment's text of a Testflinger log answer (``{"output": {phase: {"log_data": ...}}}``)."""
    return "".join(str(part.get("log_data", "")) for part in (body.get("output") or {}).values()
                   if isinstance(part, dict))
