"""Two jobs on one host: the attacker's test_cmds try to reach the victim's files, environment, device,
processes and Redis, and fail at each step; the victim completes, its output untouched.

Each job's commands run as their own uid in a user namespace (tasks/run/jobuser.py): where the platform
does not allow it (not root, no unprivileged user namespaces) this test is skipped, saying why.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.tasks.run import jobuser
from helpers import unique_queue, wait_for

pytestmark = pytest.mark.integration

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


def test_a_job_cannot_touch_another_job_on_its_host(start_cluster, cluster_redis_url, tmp_path_factory):
    reason = jobuser.unavailable()
    if reason is not None:
        pytest.skip(f"job isolation is not available here: {reason}")
    q = unique_queue("isolation")
    cluster = start_cluster({q: 2})
    # the victim: a MultiNode group of one, its device's commands holding a message of the group
    parent = submit_job({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": q, "test_data": {
        "test_cmds": VICTIM, "env": {"VICTIM_TOKEN": "victim-token-123"}}}]}})
    store = get_store()
    victim = wait_for(lambda: (store.children(parent) or [None])[0], 60, "the victim's child")
    victim_dir = cluster.state_dir / "jobs" / victim
    wait_for(lambda: (victim_dir / "mine.txt").exists() and store.get(victim).get("script_pgid"), 60,
             "the victim's commands running")
    record = store.get(victim)
    victim_pid, info = int(record["script_pgid"]), record["device_info"]
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{victim_pid}/environ").read_text().split("\0")
                   if "=" in item)
    victim_socket = environ["CONVOY_MULTINODE_SOCKET"]  # its group's relay, which the attacker tries
    # seen from the host: the victim's directory is its own uid's alone, and so are its processes
    st = victim_dir.stat()
    assert st.st_uid >= jobuser.uid_base() and st.st_mode & 0o777 == 0o700
    assert int(Path(f"/proc/{victim_pid}/status").read_text().split("Uid:")[1].split()[0]) == st.st_uid
    agent_key = cluster.state_dir / "keys" / "agent_ed25519"
    assert agent_key.exists()
    url = urlsplit(cluster_redis_url)
    assert url.password, "the cluster's Redis has a password"
    redis_dir = tmp_path_factory.getbasetemp()  # the test Redis's config file (its password) is under it

    attacker = submit_job({"job_queue": q, "test_data": {"test_cmds": ATTACKER.format(
        victim=victim, victim_socket=victim_socket,
        victim_dir=victim_dir, victim_pid=victim_pid, agent_key=agent_key, victim_ip=info["device_ip"],
        victim_port=info.get("ssh_port", 22), password=url.password, state_dir=cluster.state_dir,
        redis_dir=redis_dir, redis_host=url.hostname, redis_port=url.port)}})
    assert wait_for_job(attacker, timeout=120) == "complete"
    out = job_results(attacker)["test_output"]
    verdicts = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert {what: verdicts.get(what) for what in ATTEMPTS} == {what: "denied" for what in ATTEMPTS}, out
    # the attacker's own commands worked: root in their namespace, their directory and device reachable
    assert (verdicts.get("own-uid"), verdicts.get("own-dir"), verdicts.get("own-device")) == ("0", "ok", "ok"), out
    assert not store.client.exists("attacker-was-here")
    # the control: the same call through the victim's relay works for whoever may open its socket (root)
    cache = tmp_path_factory.mktemp("control") / "cache.txt"
    control = subprocess.run([str(Path(sys.executable).parent / "lava-wait"), "--timeout", "5", "victim-msg"],
                             env={**os.environ, "CONVOY_MULTINODE_SOCKET": victim_socket,
                                  "CONVOY_MULTINODE_CACHE": str(cache)}, capture_output=True, text=True, timeout=30)
    assert control.returncode == 0 and "victim-group-secret" in cache.read_text(), control.stderr

    (victim_dir / "release").touch()
    assert wait_for_job(parent, timeout=120) == "complete"
    assert job_results(parent)["outcome"] == "pass"  # neither cancelled nor rewritten
    assert store.output(victim, "test").startswith("victim-begin\n")
    assert store.output(victim, "test").endswith("victim-file: private\nvictim-end\n"), store.output(victim, "test")
    # after the job, its directory is root's again, and no process of its uid is left
    assert victim_dir.stat().st_uid == 0
    assert not jobuser.uid_pids(st.st_uid)
    assert os.environ.get("CONVOY_REDIS_URL") == cluster_redis_url
