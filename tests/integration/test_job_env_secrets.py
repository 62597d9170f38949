"""No job's environment names Redis: device test_cmds, the parent's and a guest's (a real job, embedded cluster).

Their ``lava-*`` commands reach the group through the job's relay socket
(``CONVOY_MULTINODE_SOCKET``), so a test command needs neither a Redis URL
nor a password, and gets none: the environment is an allow-list (PATH, HOME
and TMPDIR in the job's directory, locale, time zone, terminal, user name),
then the job's ``env``, then convoy's documented variables; nothing else of
the worker's or coordinator's (no Redis URL, no state directory, no
variable of some tool's).
"""
from __future__ import annotations

import os
import re

import pytest

from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from helpers import unique_queue

pytestmark = pytest.mark.integration

DUMP = "env | sort\nlava-group >/dev/null\nlava-sync env-dumped"


def test_no_test_command_sees_a_redis_url(start_cluster, cluster_redis_url, monkeypatch):
    monkeypatch.setenv("SOME_TOOL_REDIS", cluster_redis_url)  # inherited by the workers: must not reach jobs
    monkeypatch.setenv("SOME_TOOL_SETTING", "harmless")  # nor anything else that is not on the allow-list
    monkeypatch.setenv("TZ", "UTC")  # on it
    q = unique_queue("envdump")
    start_cluster({q: 2})
    parent = submit_job({
        "job_queue": "multi",
        "test_data": {"test_cmds": 'env | sort\nlava-group\necho "socket=$CONVOY_MULTINODE_SOCKET"'},
        "provision_data": {"jobs": [
            {"job_queue": q, "role": "host", "test_data": {"test_cmds": f"lava-send lava_start\n{DUMP}"}},
            {"job_queue": q, "role": "peer", "test_data": {"test_cmds": DUMP}},
            {"connection": "ssh", "host_role": "host", "role": "guest",
             "multinode": {"request": "lava-start", "expect_role": "host", "timeout": "2m"},
             "test_data": {"test_cmds": f"lava-self\nlava-role\n{DUMP}"}},
        ]},
    })
    finished = wait_for_job(parent, timeout=120)
    children = get_store().children(parent)
    outputs = {job: job_results(job)["test_output"] for job in [parent, *children]}
    assert finished == "complete", outputs
    host, _peer, guest = children
    # the commands worked: a sync of the three members, the parent's and the guest's lookups
    assert all(job_results(j)["test_status"] == 0 for j in children), outputs
    assert f"{host}\thost" in outputs[parent] and "socket=/" in outputs[parent]
    assert f"{guest}\nguest\n" in outputs[guest]
    secret_bits = [cluster_redis_url, "CONVOY_REDIS_URL=", "CONVOY_BROKER_URL=", "SOME_TOOL_REDIS", "redis://",
                   "CONVOY_STATE_DIR=", "SOME_TOOL_SETTING"]
    documented = {"PATH", "HOME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "TERM", "USER", "LOGNAME", "PWD", "SHLVL",
                  "_", "OLDPWD", "CONVOY_JOB_ID", "TEST_USERNAME", "DEVICE_IP", "CONVOY_GROUP_ID", "CONVOY_ROLE",
                  "CONVOY_MULTINODE_SOCKET", "CONVOY_MULTINODE_TIMEOUT", "CONVOY_MULTINODE_CACHE"}
    for job, out in outputs.items():
        assert "CONVOY_MULTINODE_SOCKET=/" in out and "TZ=UTC" in out, (job, out)
        names = {line.split("=", 1)[0] for line in out.splitlines() if re.match(r"[A-Z_][A-Z0-9_]*=", line)}
        extra = {n for n in names if n not in documented and not n.startswith(("LC_", "DEVICE_IP_"))}
        assert not extra, f"{job}'s environment has {extra}"
        home = dict(line.split("=", 1) for line in out.splitlines() if line.startswith(("HOME=", "TMPDIR=")))
        assert home["TMPDIR"] == home["HOME"] + "/tmp" and job in home["HOME"], (job, home)
        leaked = [bit for bit in secret_bits if bit in out]
        assert not leaked, f"{job}'s environment shows {leaked}"
    assert os.environ["SOME_TOOL_REDIS"] == cluster_redis_url
