"""The real ``lavacli`` against a real ``convoy server`` (LAVA's XML-RPC at /RPC2) with a real cluster behind it.

LAVA's documented client-server MultiNode example (``examples/lava-client-server.yaml``), its device type
made the test cluster's queue, goes in with ``lavacli jobs submit``; ``jobs logs`` follows a sub-job to its
end, ``jobs wait``/``show`` see it Finished and Complete, ``results`` lists its test cases; a second
job is cancelled with ``jobs cancel``; ``devices list`` and ``workers list`` show the lab.  Credentials
as lavacli users give them: ``user:token`` in the URI (the client's secret, or an access token from
/v1/oauth2/token) or in an identity file; wrong ones, none, and someone else's are refused with a clear
message and a non-zero exit.  Submitting the same definition again answers the same job ids.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from convoy.coordinator.state import clients, lavaids
from convoy.coordinator.state.connection import get_store
from helpers import REPO, unique_queue, wait_for
from serverclient import Server, add_client, start_server

pytestmark = pytest.mark.integration
LAVACLI = str(Path(sys.executable).parent / "lavacli")
JOB_TIMEOUT = 120


@pytest.fixture
def server(cluster_redis_url: str, tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path)


def lavacli(uri: str | None, *args: str, home: Path, timeout: float = JOB_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the real lavacli (``--uri`` when given, else the identity file in ``home``)."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home)}
    command = [LAVACLI, *(["--uri", uri] if uri else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"lavacli {done.args[1:]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    return done.stdout


def refused(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr and "Unknown error" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    return done.stderr


def client_server_job(device_type: str) -> str:
    """LAVA's client-server example on ``device_type``, the server also recording a test case."""
    job = yaml.safe_load((REPO / "examples" / "lava-client-server.yaml").read_text())
    for role in job["protocols"]["lava-multinode"]["roles"].values():
        role["device_type"] = device_type
    server_steps = job["actions"][2]["test"]["definitions"][0]["repository"]["run"]["steps"]
    server_steps.append("lava-test-case server-ran --result pass")
    return yaml.safe_dump(job, sort_keys=False)


def sleeper_job(device_type: str) -> str:
    return yaml.safe_dump({
        "job_name": "sleeps until cancelled", "device_type": device_type, "timeouts": {"job": {"minutes": 5}},
        "actions": [{"deploy": {"to": "tmpfs", "os": "debian"}}, {"boot": {"method": "qemu"}},
                    {"test": {"definitions": [{
                        "from": "inline", "name": "sleeper", "path": "inline/sleeper.yaml",
                        "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": "sleeper"},
                                       "run": {"steps": ["echo sleeping now", "sleep 600"]}}}]}}]})


def test_lavacli_submits_follows_reads_and_cancels_jobs_with_its_credentials_only(
        start_cluster, server: Server, tmp_path: Path, cluster_redis_url: str) -> None:
    queue = unique_queue("lava")
    start_cluster({queue: 2})
    suffix = queue.rsplit("-", 1)[1]
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    secret, bob_secret = add_client(alice, "--max-priority", f"{queue}=50"), add_client(bob)
    host = server.base.removeprefix("http://")
    uri = f"http://{alice}:{secret}@{host}/RPC2"
    home = tmp_path / "home"
    home.mkdir()
    definition = tmp_path / "client-server.yaml"
    definition.write_text(client_server_job(queue))

    # submit a MultiNode job: LAVA's sub-job ids, in its roles' order; the same text again: the same job
    assert ok(lavacli(uri, "system", "version", home=home)).startswith("2025.10+convoy")
    sub_ids = ok(lavacli(uri, "jobs", "submit", str(definition), home=home)).split()
    assert len(sub_ids) == 2 and sub_ids[0].endswith(".0") and sub_ids[1].endswith(".1"), sub_ids
    assert ok(lavacli(uri, "jobs", "submit", str(definition), home=home)).split() == sub_ids
    first = int(sub_ids[0].split(".")[0])
    store = get_store()
    parent = store.get(lavaids.job_of(store.client, first))["parent_job_id"]
    server_job, client_job = store.children(parent)
    assert store.get(server_job)["role"] == "server" and store.get(client_job)["role"] == "client"
    assert clients.client_job_ids(store.client, alice, 10) == [parent]  # one job, not two

    # follow the client's log to the end (LAVA's format, from its start line), wait, show
    logs = ok(lavacli(uri, "jobs", "logs", "--polling", "1", sub_ids[1], home=home))
    assert "The free disk space on server is " in logs, logs
    assert "start: " in logs and "Job finished correctly" in logs
    ok(lavacli(uri, "jobs", "wait", "--polling", "1", sub_ids[0], home=home))
    shown = json.loads(ok(lavacli(uri, "jobs", "show", "--json", sub_ids[0], home=home)))
    assert (shown["id"], shown["state"], shown["health"]) == (sub_ids[0], "Finished", "Complete"), shown
    assert shown["submitter"] == alice and shown["device_type"] == queue and shown["device"]
    assert shown["submit_time"] and shown["start_time"] and shown["end_time"]
    raw = ok(lavacli(uri, "jobs", "logs", "--raw", "--no-follow", "--start", "2", sub_ids[1], home=home))
    lines = yaml.safe_load(raw)
    assert {line["lvl"] for line in lines} <= {"info", "debug", "target", "results", "error"}
    full = yaml.safe_load(ok(lavacli(uri, "jobs", "logs", "--raw", "--no-follow", sub_ids[1], home=home)))
    assert full[2:] == lines  # the start line lavacli passes

    # results: the job's test cases, a suite's, a case's
    results = ok(lavacli(uri, "results", sub_ids[0], home=home))
    assert "* 0_run-server.server-ran [pass]" in results, results
    assert "* lava.multinode-send-server-ready [pass]" in results, results
    assert ok(lavacli(uri, "results", sub_ids[0], "0_run-server", "server-ran", home=home)).strip() == "pass"
    suite = json.loads(ok(lavacli(uri, "results", "--json", sub_ids[1], "lava", home=home)))
    assert "multinode-wait-server-ready" in [case["name"] for case in suite]
    refused(lavacli(uri, "results", sub_ids[0], "no-such-suite", home=home), "404", "no-such-suite")

    # the lab
    devices = ok(lavacli(uri, "devices", "list", home=home))
    assert devices.count(f"({queue}): Idle,Good") == 2, devices
    assert ok(lavacli(uri, "workers", "list", home=home)).startswith("Workers:\n* ")

    # a second job, cancelled while it runs: it ends Canceled
    sleeper = tmp_path / "sleeper.yaml"
    sleeper.write_text(sleeper_job(queue))
    job = ok(lavacli(uri, "jobs", "submit", str(sleeper), home=home)).strip()
    assert job.isdigit()
    sleeping = lavaids.job_of(store.client, int(job))
    wait_for(lambda: "sleeping now" in store.output(sleeping, "test"), 60, "the sleeper sleeping")
    refused(lavacli(f"http://{host}/RPC2", "jobs", "cancel", job, home=home), "404")  # anonymous: not its job
    ok(lavacli(uri, "jobs", "cancel", job, home=home))
    ok(lavacli(uri, "jobs", "wait", "--polling", "1", job, home=home))
    shown = json.loads(ok(lavacli(uri, "jobs", "show", "--json", job, home=home)))
    assert (shown["state"], shown["health"]) == ("Finished", "Canceled"), shown

    # alice's jobs, MultiNode ones as their sub-jobs, newest first; filtered by LAVA's state and health
    listed = json.loads(ok(lavacli(uri, "jobs", "list", "--json", home=home)))
    assert [j["id"] for j in listed] == [int(job), *sub_ids], listed
    cancelled = json.loads(ok(lavacli(uri, "jobs", "list", "--json", "--state", "FINISHED", "--health", "CANCELED",
                                      home=home)))
    assert [(j["id"], j["description"], j["submitter"]) for j in cancelled] == [
        (int(job), "sleeps until cancelled", alice)]
    assert "jobs.list" in refused(lavacli(f"http://{host}/RPC2", "jobs", "list", home=home), "401", "token")
    # validate: nothing queued; an invalid definition named by its field
    ok(lavacli(uri, "jobs", "validate", str(sleeper), home=home))
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(sleeper_job(queue).replace("minutes: 5", "minutes: soon"))
    problem = lavacli(uri, "jobs", "validate", str(invalid), home=home)
    assert problem.returncode == 1 and "key: timeouts" in problem.stdout and "msg: " in problem.stdout, problem
    assert [j["id"] for j in json.loads(ok(lavacli(uri, "jobs", "list", "--json", home=home)))] == [int(job), *sub_ids]

    # wrong credentials: refused at once, clearly, the token never echoed
    for wrong in (f"http://{alice}:not-the-secret@{host}/RPC2", f"http://{bob}:{secret}@{host}/RPC2"):
        for args in (("jobs", "show", job), ("jobs", "submit", str(sleeper)), ("devices", "list")):
            stderr = refused(lavacli(wrong, *args, home=home), "401", "Authentication failed")
            assert secret not in stderr
    # no credentials: someone's job is not found; bob (an identity file) does not see alice's job either
    refused(lavacli(f"http://{host}/RPC2", "jobs", "show", job, home=home), "404", f"Job '{job}' was not found")
    (home / "lavacli.yaml").write_text(yaml.safe_dump(
        {"default": {"uri": f"http://{host}/RPC2", "username": bob, "token": bob_secret}}))
    assert ok(lavacli(None, "system", "whoami", home=home)).strip() == bob
    refused(lavacli(None, "jobs", "show", sub_ids[0], home=home), "404")
    refused(lavacli(None, "jobs", "cancel", sub_ids[0], home=home), "404")
    refused(lavacli(None, "results", sub_ids[0], home=home), "404")

    # anonymous (the server takes anonymous jobs): submits, reads its own job, cannot cancel without a token
    quick = tmp_path / "quick.yaml"
    quick.write_text(sleeper_job(queue).replace("sleep 600", "echo done"))
    anonymous = f"http://{host}/RPC2"
    public = ok(lavacli(anonymous, "jobs", "submit", str(quick), home=home)).strip()
    ok(lavacli(anonymous, "jobs", "wait", "--polling", "1", public, home=home))
    shown = json.loads(ok(lavacli(anonymous, "jobs", "show", "--json", public, home=home)))
    assert (shown["submitter"], shown["health"], shown["visibility"]) == ("anonymous", "Complete", "Publicly visible")
    refused(lavacli(anonymous, "jobs", "cancel", public, home=home), "401", "needs a token")
    refused(lavacli(uri, "jobs", "show", public, home=home), "404")  # not alice's

    # an access token from /v1/oauth2/token works as the token too
    token = server.login(alice, secret)["access_token"]
    shown = json.loads(ok(lavacli(f"http://{alice}:{token}@{host}/RPC2", "jobs", "show", "--json", job, home=home)))
    assert shown["health"] == "Canceled"
