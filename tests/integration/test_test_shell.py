"""LAVA's test shell on the device: LAVA jobs whose definitions run on emulated devices over real SSH.

Each job is submitted to an embedded cluster (real Redis, real worker
processes, emulated devices that are real SSH servers); the worker copies the
overlay to the device and runs each test action in one ``ssh`` session, the
helpers (``lava-test-case``, ``lava-send`` ...) talking back over it.  What is
asserted is what a user sees: the job's outcome, its output, its test cases.

Checks that depend on the device being a sandbox of its own (its own
interface and address) read ``device_info["sandboxed"]``: on a device that is
not one, ``lava-echo-ipv4`` prints the device's address all the same.
"""
from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from junitparser import JUnitXml

from convoy.connectors.emulated.image import device_paths
from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.testcases import cases
from helpers import CONVOY, unique_queue

pytestmark = pytest.mark.integration


def definition(name: str, *steps: str, **repository) -> dict:
    return {"from": "inline", "name": name, "path": f"inline/{name}.yaml",
            "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": name},
                           "run": {"steps": list(steps)}, **repository}}


def single_job(device_type: str, *definitions: dict, timeout: int = 120) -> dict:
    return {"job_name": "test shell", "device_type": device_type, "timeouts": {"job": {"seconds": timeout}},
            "actions": [{"deploy": {"to": "tmpfs", "os": "debian"}}, {"boot": {"method": "qemu"}},
                        {"test": {"definitions": list(definitions)}}]}


def group_job(roles: dict[str, str], tests: dict[str, list[dict]], timeout: int = 120) -> dict:
    """A MultiNode job: ``roles`` role → device type, ``tests`` role → its definitions."""
    return {"job_name": "test shell group", "timeouts": {"job": {"seconds": timeout}},
            "protocols": {"lava-multinode": {"roles": {r: {"device_type": t, "count": 1} for r, t in roles.items()},
                                             "timeout": {"seconds": 30}}},
            "actions": [{"deploy": {"to": "tmpfs", "os": "debian"}},
                        *({"test": {"role": [role], "definitions": defs}} for role, defs in tests.items())]}


def output(job_id: str) -> str:
    return get_store().output(job_id, "test")


def by_role(parent: str) -> dict[str, str]:
    store = get_store()
    return {store.get(child)["role"]: child for child in store.children(parent)}


def test_steps_run_in_the_devices_home_with_lava_helpers_and_results(start_cluster):
    qemu = unique_queue("qemu")
    cluster = start_cluster({qemu: 1})
    token = f"/tmp/convoy-test-shell-{uuid.uuid4().hex}"
    job_id = submit_job(single_job(qemu, definition(
        "smoke",
        "pwd",
        f"echo written-in-the-devices-tmp > {token}",
        "echo made-on-the-device > made-by-step.txt",
        "lava-test-case file-written --shell test -s made-by-step.txt",
        "echo ipv4=$(lava-echo-ipv4 eth0)",
        "echo param=$SPEED/$NAME",
        "lava-test-set start timing",
        "lava-test-case boot-time --result pass --measurement 3.5 --units s",
        "lava-test-set stop",
        "lava-test-case shell-false --shell false",
        "lava-test-case skipped --result skip",
        # installed by the device's apt-get (sandboxed), or recorded (a device that is its host)
        "cat $HOME/.convoy/installed 2>/dev/null || for p in iperf3 curl; do dpkg-query -W -f '${Package}\\n' $p; done",
        "echo secret-vars=$(env | grep -ci -e redis -e password -e CONVOY_MULTINODE_SOCKET)",
        params={"SPEED": 10, "NAME": "default"}, install={"deps": ["iperf3", "curl"]}),
        definition("second", "echo second-definition-in-$(basename $(pwd))")))
    assert wait_for_job(job_id, timeout=120) == "complete"
    results = job_results(job_id)
    out = output(job_id)
    assert results["outcome"] == "pass", out  # a failed test case does not fail the job
    (device,) = cluster.devices
    home = device_paths(device, cluster.state_dir).home
    info = results["device_info"]
    assert f"{home}/lava-{job_id}/0/tests/0_smoke\n" in out, out  # LAVA's per-definition directory
    assert not list(cluster.state_dir.glob(f"jobs/{job_id}/made-by-step.txt"))  # not on the worker's side
    assert f"ipv4={info['device_ip']}\n" in out  # the device's own address (sandboxed or not)
    assert "param=10/default\n" in out and "iperf3\ncurl\n" in out  # params exported, deps to the stand-in
    assert "second-definition-in-1_second\n" in out
    assert "secret-vars=0\n" in out  # no Redis URL, password or relay socket on the device
    if info.get("sandboxed"):  # a machine of its own: its /tmp is not the host's
        assert not Path(token).exists()
    else:  # no sandbox here: the device's /tmp is its host's (the test output warned)
        assert Path(token).read_text() == "written-in-the-devices-tmp\n" and "is not a sandbox" in out
        Path(token).unlink()
    assert "<LAVA_SIGNAL" not in out and "<LAVA_MULTI_NODE" not in out  # markers are read, not shown
    found = {(c["suite"], c["case"]): c for c in cases(get_store().client, job_id)}
    assert found[("0_smoke", "file-written")]["result"] == "pass"
    assert found[("0_smoke", "boot-time")] == {"suite": "0_smoke", "case": "boot-time", "result": "pass",
                                                "measurement": "3.5", "units": "s", "set": "timing",
                                                "definition": "0_smoke"}
    assert found[("0_smoke", "shell-false")]["result"] == "fail"
    assert found[("0_smoke", "skipped")]["result"] == "skip"
    assert found[("lava", "0_smoke")]["result"] == "pass" and found[("lava", "1_second")]["result"] == "pass"


def test_lava_test_raise_fails_the_job_and_stops_the_definitions(start_cluster):
    qemu = unique_queue("qemu")
    start_cluster({qemu: 1})
    job_id = submit_job(single_job(qemu, definition("raises", "echo before", "lava-test-raise disk missing",
                                                    "echo not-reached"),
                                   definition("after", "echo not-run-either")))
    assert wait_for_job(job_id, timeout=120) == "complete"
    out = output(job_id)
    assert job_results(job_id)["outcome"] == "fail", out
    assert "before\n" in out and "lava-test-raise: disk missing" in out
    assert "not-reached" not in out and "not-run-either" not in out


def test_iperf3_server_on_one_device_is_reached_by_the_client_on_another(start_cluster, tmp_path):
    qemu = unique_queue("qemu")
    start_cluster({qemu: 2})
    server = definition(
        "iperf-server",
        "IP=$(lava-echo-ipv4 eth0)",
        "iperf3 -s -1 -B $IP -p 5301 > iperf-server.log 2>&1 &",
        "for try in $(seq 200); do ss -ltn | grep -q \"$IP:5301 \" && break; sleep 0.05; done",
        "lava-send server-ready ip=$IP",
        "lava-wait client-done",
        "echo server saw $(grep -c receiver iperf-server.log) receiver line")
    client = definition(
        "iperf-client",
        "lava-wait server-ready",
        "SERVER=$(cut -d = -f 2 /tmp/lava_multi_node_cache.txt)",
        "echo client connects to $SERVER",
        "iperf3 -c $SERVER -p 5301 -t 1 -J > iperf.json",
        "RATE=$(python3 -c 'import json; print(json.load(open(\"iperf.json\"))[\"end\"][\"sum_received\"]"
        "[\"bits_per_second\"])')",
        "lava-test-case throughput --result pass --measurement $RATE --units bits/s",
        "lava-send client-done")
    parent = submit_job(group_job({"server": qemu, "client": qemu},
                                  {"server": [server], "client": [client]}))
    assert wait_for_job(parent, timeout=180) == "complete"
    roles = by_role(parent)
    results = job_results(parent)
    assert results["outcome"] == "pass", output(roles["server"]) + output(roles["client"])
    server_ip = get_store().get(roles["server"])["device_info"]["device_ip"]
    assert f"client connects to {server_ip}\n" in output(roles["client"])
    assert "server saw 1 receiver line" in output(roles["server"])
    (rate,) = [c for c in cases(get_store().client, roles["client"]) if c["case"] == "throughput"]
    assert float(rate["measurement"]) > 0 and rate["units"] == "bits/s" and rate["suite"] == "0_iperf-client"
    junit = tmp_path / "junit.xml"  # what a CI system reads: convoy results --junit, read back by a JUnit reader
    done = subprocess.run([CONVOY, "results", parent, "--junit", str(junit)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ), check=False)
    assert done.returncode == 0, done.stderr
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(junit))}
    (case,) = [c for c in suites["client/0_iperf-client"] if c.name == "throughput"]
    assert case.is_passed and f"measurement: {rate['measurement']} bits/s" in case.system_out


def test_device_side_multinode_api_waits_syncs_and_caches(start_cluster):
    """Wait after the send (early) and before it (late: blocked until the send), wait-all by role, a sync id
    reused in a loop, the cache files."""
    qemu = unique_queue("qemu")
    start_cluster({qemu: 3})
    sender = definition(
        "sender",
        "lava-send early value='a b=c' who=$(lava-self)",
        "lava-network broadcast eth0",
        "lava-sync after-early",
        "lava-sync late-waiter-ready",
        "sleep 1",  # the waiter's lava-wait is issued first: the send below releases a blocked wait
        "lava-send late v=1",
        "for i in 1 2 3; do lava-sync loop; echo sender-loop-$i; done",
        "lava-send by-role r=$(lava-role)")
    waiter = definition(
        "waiter",
        "lava-sync after-early",
        "lava-wait early",
        "echo early-cache: $(cat /tmp/lava_multi_node_cache.txt | sort | tr '\\n' ' ')",
        "lava-sync late-waiter-ready",
        "before=$(date +%s%N); lava-wait late; echo late-wait-blocked-ms: $(( ($(date +%s%N) - before) / 1000000 ))",
        "for i in 1 2 3; do lava-sync loop; echo waiter-loop-$i; done",
        "lava-send by-role r=$(lava-role)")
    watcher = definition(
        "watcher",
        "lava-sync after-early",
        "lava-sync late-waiter-ready",
        "for i in 1 2 3; do lava-sync loop; echo watcher-loop-$i; done",
        "lava-wait-all by-role waiter",
        "echo wait-all-cache: $(cat /tmp/lava_multi_node_cache.txt)",
        "echo group: $(lava-group | wc -l) members, roles $(lava-role list | sort | tr '\\n' ' ')",
        "lava-group nobody || echo unknown-role-exit-$?",
        "lava-network collect eth0 sender",
        "echo network-cache: $(cat /tmp/lava_multi_node_network_cache.txt | grep ipv4=)",
        "echo query: $(lava-network query $(lava-group sender) ipv4)",
        "lava-network hosts hosts.txt && echo hosts: $(cat hosts.txt)")
    parent = submit_job(group_job({"sender": qemu, "waiter": qemu, "watcher": qemu},
                                  {"sender": [sender], "waiter": [waiter], "watcher": [watcher]}))
    assert wait_for_job(parent, timeout=180) == "complete"
    roles = by_role(parent)
    outs = {role: output(child) for role, child in roles.items()}
    assert job_results(parent)["outcome"] == "pass", outs
    assert f"early-cache: value=a b=c who={roles['sender']}\n" in outs["waiter"]
    (blocked,) = re.findall(r"^late-wait-blocked-ms: (\d+)$", outs["waiter"], re.MULTILINE)
    assert int(blocked) >= 500, outs["waiter"]  # it waited for the send, which came after it
    for role in roles:
        assert [int(n) for n in re.findall(rf"^{role}-loop-(\d)$", outs[role], re.MULTILINE)] == [1, 2, 3]
    (cached,) = re.findall(r"^wait-all-cache: (.*)$", outs["watcher"], re.MULTILINE)  # <job_id>:key=value
    assert f"{roles['waiter']}:r=waiter" in cached.split(), cached
    assert "group: 3 members, roles sender waiter watcher" in outs["watcher"]
    assert "unknown-role-exit-1" in outs["watcher"]
    sender_ip = get_store().get(roles["sender"])["device_info"]["device_ip"]  # its own address, sandboxed or not
    assert f"network-cache: {roles['sender']}:ipv4={sender_ip}\n" in outs["watcher"], outs["watcher"]
    assert f"query: {sender_ip}\n" in outs["watcher"] and f"hosts: {sender_ip} {roles['sender']}\n" in outs["watcher"]


def test_a_raising_member_releases_the_others_waits_and_a_wait_times_out(start_cluster):
    qemu = unique_queue("qemu")
    start_cluster({qemu: 3})
    parent = submit_job(group_job(
        {"raiser": qemu, "waiter": qemu, "timer": qemu},
        {"raiser": [definition("raiser", "lava-test-raise the raiser gives up")],
         "waiter": [definition("waiter", "lava-wait never-sent", "echo waiter-not-released")],
         "timer": [definition("timer", "lava-wait --timeout 1 nobody-sends-this", "echo timer-went-on")]}))
    assert wait_for_job(parent, timeout=120) == "complete"
    roles = by_role(parent)
    outs = {role: output(child) for role, child in roles.items()}
    assert job_results(parent)["outcome"] == "fail"
    assert "lava-test-raise: the raiser gives up" in outs["raiser"]
    assert roles["raiser"] in outs["waiter"] and "waiter-not-released" not in outs["waiter"], outs["waiter"]
    assert "timer-went-on" not in outs["timer"] and "a MultiNode call failed" in outs["timer"], outs["timer"]


def test_a_convoy_job_may_give_test_cmds_for_the_host_and_lava_tests_for_the_device(start_cluster):
    queue = unique_queue("board")
    start_cluster({queue: 1})
    job_id = submit_job({"job_queue": queue, "test_data": {
        "test_cmds": "echo host-side $DEVICE_IP",
        "lava_tests": [{"definitions": [definition("on-device", "echo device-side $(lava-echo-ipv4 eth0)")]}]}})
    assert wait_for_job(job_id, timeout=120) == "complete"
    out = output(job_id)
    ip = job_results(job_id)["device_info"]["device_ip"]
    assert job_results(job_id)["outcome"] == "pass", out
    assert out.index(f"host-side {ip}\n") < out.index(f"device-side {ip}\n"), out
