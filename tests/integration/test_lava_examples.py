"""LAVA's documented MultiNode examples, written as LAVA jobs, run through ``convoy run``.

Each job in ``examples/lava-*.yaml`` is translated (convoy.config.lava.translate), its
device types become queues served by emulated devices, and its test
definitions run with the real ``lava-*`` commands.  The assertions read what
a user reads: the exit code, ``results.json`` and each device's output.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import CONVOY, REPO

pytestmark = pytest.mark.integration


def convoy_run(example: str, artifacts: Path) -> dict:
    """Run ``examples/<example>`` on the embedded default; return its results.json (after asserting a pass)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CONVOY_REDIS_URL", "CONVOY_STATE_DIR")}
    result = subprocess.run([CONVOY, "run", str(REPO / "examples" / example), "--artifacts", str(artifacts)],
                            capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (job_dir,) = list(artifacts.iterdir())
    results = json.loads((job_dir / "results.json").read_text())
    assert results["job_state"] == "complete" and results["outcome"] == "pass"
    assert results["job_queue"] == "multi"
    for child in results["children"]:
        assert child["outcome"] == "pass", child
        assert child.get("test_status") == 0, child
        mine = [c for c in results.get("multinode", []) if c["job_id"] == child["job_id"]]
        assert child.get("multinode", []) == mine, "a member's results list its own MultiNode calls"
    for call in results.get("multinode", []):  # the live view showed every call
        assert f"{call['name']}: {call['result']}" in result.stdout, call
    return results


def by_role(results: dict) -> dict[str, list[dict]]:
    roles: dict[str, list[dict]] = {}
    for child in results["children"]:
        roles.setdefault(child["role"], []).append(child)
    return roles


def api_calls(results: dict, name: str) -> list[dict]:
    """The MultiNode API calls of the job with this name (``multinode-sync-ready``); all must have passed."""
    calls = [c for c in results.get("multinode", []) if c["name"] == name]
    assert all(c["result"] == "pass" for c in calls), calls
    return calls


def stamps(output: str, label: str) -> list[float]:
    return [float(m) for m in re.findall(rf"^{label} (\d+\.\d+)$", output, re.MULTILINE)]


def test_client_server_passes_the_free_space_through_the_cache_file(tmp_path):
    results = convoy_run("lava-client-server.yaml", tmp_path)
    roles = by_role(results)
    (server,), (client,) = roles["server"], roles["client"]
    assert server["job_queue"] == client["job_queue"] == "qemu"  # device_type → queue
    space = server["test_output"].strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9.,]+[KMGTP]?", space), server["test_output"]
    assert f"The free disk space on server is {space}\n" in client["test_output"]
    (sent,) = api_calls(results, "multinode-send-server-ready")
    (waited,) = api_calls(results, "multinode-wait-server-ready")
    assert sent["job_id"] == server["job_id"] and waited["job_id"] == client["job_id"]


def test_iperf_clients_measure_against_the_server_and_it_waits_for_all_of_them(tmp_path):
    results = convoy_run("lava-iperf.yaml", tmp_path)
    roles = by_role(results)
    (server,), clients = roles["server"], roles["client"]
    assert len(clients) == 2
    server_ip = server["device_info"]["device_ip"]
    ports = set()
    for client in clients:
        out = client["test_output"]
        assert "iperf Done." in out, out
        match = re.search(rf"connected to {re.escape(server_ip)} port (\d+)", out)
        assert match, out
        ports.add(match.group(1))
    assert ports == {"5201", "5202"}
    assert server["test_output"].rstrip().endswith("all clients done")
    (wait_all,) = api_calls(results, "multinode-wait-all-client-done")
    assert wait_all["job_id"] == server["job_id"]
    assert {c["job_id"] for c in api_calls(results, "multinode-send-client-done")} == {c["job_id"] for c in clients}


def test_variable_number_of_clients_all_meet_at_every_sync(tmp_path):
    results = convoy_run("lava-variable-clients.yaml", tmp_path)
    roles = by_role(results)
    (server,), clients = roles["server"], roles["client"]
    assert len(clients) == 3
    members = [server, *clients]
    for client in clients:  # lava-group | grep 'server$' | cut -f 1 names the server's job
        assert f"client {client['job_id']} uses server {server['job_id']}" in client["test_output"]
    for sync in ("ready", "done"):
        calls = api_calls(results, f"multinode-sync-{sync}")
        assert sorted(c["job_id"] for c in calls) == sorted(m["job_id"] for m in members)
        entered = [t for m in members for t in stamps(m["test_output"], f"before-{sync}")]
        left = [t for m in members for t in stamps(m["test_output"], f"after-{sync}")]
        assert len(entered) == len(left) == 4
        assert max(entered) < min(left), f"a member left lava-sync {sync} before every member had reached it"


def test_peers_find_each_other_through_lava_group_and_lava_self(tmp_path):
    results = convoy_run("lava-peer-to-peer.yaml", tmp_path)
    peers = by_role(results)["peer"]
    assert len(peers) == 3 and set(by_role(results)) == {"peer"}
    ids = {p["job_id"] for p in peers}
    for peer in peers:
        others = ids - {peer["job_id"]}
        seen = set(re.findall(r"^peer (\S+) at \S+ says: data of peer (\S+)$", peer["test_output"], re.MULTILINE))
        assert seen == {(other, other) for other in others}, peer["test_output"]
    for sync in ("running", "finished"):
        assert len(api_calls(results, f"multinode-sync-{sync}")) == 3
    assert len(api_calls(results, "multinode-send-peer-" + peers[0]["job_id"])) == 1


def test_flow_table_client_waits_for_the_server_role_and_the_observer_for_everyone(tmp_path):
    results = convoy_run("lava-flow-table.yaml", tmp_path)
    roles = by_role(results)
    (server,), (client,), (observer,) = roles["server"], roles["client"], roles["observer"]
    out = client["test_output"]
    # lava-wait-all writes <job_id>:key=value lines
    assert f"{server['job_id']}:url=http://{server['device_info']['device_ip']}:8080/" in out
    assert f"client got: served by {server['job_id']}" in out
    (wait_all,) = api_calls(results, "multinode-wait-all-ready")
    assert wait_all["job_id"] == client["job_id"]
    for sync in ("start", "fin"):
        assert len(api_calls(results, f"multinode-sync-{sync}")) == 3
    client_done = stamps(out, "client tasks done at")
    observer_released = stamps(observer["test_output"], "observer released at")
    server_done = stamps(server["test_output"], "server done at")
    assert client_done and observer_released and server_done
    assert client_done[0] < observer_released[0] and client_done[0] < server_done[0]


def test_secondary_connections_start_after_lava_start_and_reach_the_host(tmp_path):
    results = convoy_run("lava-secondary-connections.yaml", tmp_path)
    roles = by_role(results)
    (host,), guests = roles["host"], roles["guest"]
    assert len(guests) == 3
    assert host["job_queue"] == "beaglebone-black"
    host_ip = host["device_info"]["device_ip"]
    assert all("device_info" not in g for g in guests)  # guests hold no device
    job_list = json.loads((tmp_path / results["job_id"] / "job_list.json").read_text())
    assert [entry["job_id"] for entry in job_list] == [host["job_id"]]
    for guest in guests:
        out = guest["test_output"]
        assert out.index("delayed start: lava_start received from role host") < \
            out.index(f"connects to {host_ip} (the device's own address is {host_ip})"), out
        assert "IMAGE=debian" in out  # the host was provisioned with the deploy's os
    (start,) = api_calls(results, "multinode-send-lava_start")
    assert start["job_id"] == host["job_id"]
    waits = api_calls(results, "multinode-wait-ipv4")  # the guests' deploy protocol request
    assert sorted(w["job_id"] for w in waits) == sorted(g["job_id"] for g in guests)
    assert all(w["time"] > start["time"] for w in waits)
    assert len(api_calls(results, "multinode-sync-clients")) == 4
