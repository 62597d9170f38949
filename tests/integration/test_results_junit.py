"""LAVA-style test results in Redis, ``job_results`` and ``convoy results --junit`` (real Redis, real CLI)."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
from junitparser import JUnitXml

from convoy.config.lifecycle import Phase
from convoy.config.testresults import TestCaseError
from convoy.coordinator.api import job_results
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.testcases import cases, cases_of, delete_cases, record_case
from helpers import CONVOY

pytestmark = pytest.mark.integration


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CONVOY, *args], capture_output=True, text=True, timeout=30, env=dict(os.environ))


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


# --- job_results and `convoy results --junit` --------------------------------
def log_call(client, group_id: str, job_id: str, role: str, name: str) -> None:
    """One record of the group's MultiNode API log, as the relay writes it (``group.api_calls`` reads it)."""
    client.rpush(keys.group_api_log(group_id), json.dumps(
        {"job_id": job_id, "role": role, "name": name, "result": "pass", "time": time.time()}))


def make_multinode_job(store) -> tuple[str, str, str]:
    """A parent with a server and a client in a MultiNode group; the server reported cases and calls."""
    from convoy.coordinator.multinode.group import create_group

    parent, server, client = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("parent", "server", "client"))
    store.create(parent, {"job_queue": "multi"}, queue="multi")
    store.create(server, {"job_queue": "emulated"}, queue="emulated", parent_job_id=parent, role="server")
    store.create(client, {"job_queue": "emulated"}, queue="emulated", parent_job_id=parent, role="client")
    create_group(store.client, parent, {server: "server", client: "client"})
    for job_id in (server, client):
        store.start_phase(job_id, Phase.TEST)
        store.end_phase(job_id, Phase.TEST, 0)
    record_case(store.client, server, {"suite": "0_iperf", "case": "bandwidth", "result": "pass",
                                       "measurement": "941.5", "units": "Mbits/s"})
    record_case(store.client, server, {"suite": "0_iperf", "case": "retries", "result": "fail"})
    record_case(store.client, server, {"suite": "1_smoke", "case": "uname", "result": "skip"})
    log_call(store.client, parent, server, "server", "multinode-send-server-ready")
    log_call(store.client, parent, client, "client", "multinode-wait-server-ready")
    return parent, server, client


def test_job_results_show_each_members_suites_and_its_own_lava_calls(cluster_redis_url):
    store = get_store()
    parent, server, _client = make_multinode_job(store)

    mine = job_results(server)
    assert mine["test_status"] == 0 and mine["role"] == "server"  # the Testflinger keys stay
    assert [s["name"] for s in mine["test_results"]] == ["0_iperf", "1_smoke", "lava"]
    assert mine["test_results"][0]["cases"][0] == {"case": "bandwidth", "result": "pass",
                                                   "measurement": "941.5", "units": "Mbits/s"}
    assert [(c["case"], c["result"]) for c in mine["test_results"][2]["cases"]] == \
        [("multinode-send-server-ready", "pass")]

    whole = job_results(parent)
    assert whole["test_results"] == []
    children = {c["role"]: c for c in whole["children"]}
    assert children["server"]["test_results"] == mine["test_results"]
    assert children["client"]["test_results"] == [
        {"name": "lava", "cases": [{"case": "multinode-wait-server-ready", "result": "pass",
                                    "ended": children["client"]["test_results"][0]["cases"][0]["ended"]}]}]
    assert children["client"]["test_status"] == 0
    assert len(whole["multinode"]) == 2


def test_convoy_results_prints_json_and_writes_junit_a_reader_reads_back(cluster_redis_url, tmp_path):
    parent, _server, _client = make_multinode_job(get_store())
    path = tmp_path / "out" / "junit.xml"
    path.parent.mkdir()
    done = run_cli("results", parent, "--junit", str(path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["children"][0]["test_results"][0]["name"] == "0_iperf"
    assert str(path) in done.stderr

    xml = JUnitXml.fromfile(str(path))
    suites_ = {s.name: s for s in xml}
    assert "server/0_iperf" in suites_ and "server/1_smoke" in suites_ and "client/lava" in suites_
    cases_ = {c.name: c for c in suites_["server/0_iperf"]}
    assert cases_["bandwidth"].is_passed and "measurement: 941.5 Mbits/s" in cases_["bandwidth"].system_out
    assert cases_["retries"].is_failure
    assert next(iter(suites_["server/1_smoke"])).is_skipped
    assert xml.failures == 1

    to_stdout = run_cli("results", parent, "--junit", "-")
    assert to_stdout.returncode == 0 and JUnitXml.fromstring(to_stdout.stdout.encode()).tests == xml.tests


def test_a_testflinger_job_gives_a_testcase_per_phase_and_a_bad_path_a_clear_error(cluster_redis_url, tmp_path):
    store = get_store()
    job_id = f"plain-{uuid.uuid4().hex[:8]}"
    store.create(job_id, {"job_queue": "emulated"}, queue="emulated")
    for phase, status in ((Phase.PROVISION, 0), (Phase.TEST, 3)):
        store.start_phase(job_id, phase)
        store.append_output(job_id, phase, f"{phase} says hi\n")
        store.end_phase(job_id, phase, status)
    path = tmp_path / "junit.xml"
    assert run_cli("results", job_id, "--junit", str(path)).returncode == 0
    (suite,) = JUnitXml.fromfile(str(path))
    assert suite.name == f"{job_id}/phases"
    assert {c.name: c.is_passed for c in suite} == {"provision": True, "test": False}

    bad = run_cli("results", job_id, "--junit", str(tmp_path / "missing" / "junit.xml"))
    assert bad.returncode != 0 and "cannot write the JUnit file" in bad.stderr and "Traceback" not in bad.stderr


def test_a_job_keeps_at_most_max_cases(redis_client, monkeypatch):
    from convoy.coordinator.state import testcases

    monkeypatch.setattr(testcases, "MAX_CASES", 3)
    for i in range(3):
        record_case(redis_client, "job-big", {"suite": "0_a", "case": f"c{i}", "result": "pass"})
    with pytest.raises(TestCaseError, match="already has 3 test cases"):
        record_case(redis_client, "job-big", {"suite": "0_a", "case": "c3", "result": "pass"})
    assert [c["case"] for c in cases(redis_client, "job-big")] == ["c0", "c1", "c2"]
