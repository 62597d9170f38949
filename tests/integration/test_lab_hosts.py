"""A lab of several hosts, built as the README's "Deploying a lab" says, out of network namespaces.

Redis (ACL users and passwords from ``convoy redis-acl``, protected mode,
append-only) on one host, a ``convoy coordinator`` and ``convoy server`` (the
users' front door, with the server's ACL user) on another, two device
hosts whose ``convoy worker`` serves sandboxed emulated devices on the lab
network at the addresses their agent files give (``config.bridge``), and a
third host with a machine that a device host reaches as a ``noprovision``
device (it trusts that host's agent key: the one step done by hand).  No two
hosts share a state directory; each has its own agent key.  Testflinger's
coordinated-testing example, a LAVA-form MultiNode job with a role on each
host, a reservation and a job leaving artifacts on every host all complete.
No private key is on more than one host; after cleanup no job's or reserved
user's key is trusted by any device.  The user holds only the server's address
and a client's credentials.  Runs where ``ip netns`` works (root:
CI); elsewhere it is skipped, saying why.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
import redis as redis_lib
import yaml

from convoy.config.settings import load_settings
from convoy.connectors.emulated.connector import EmulatedConnector
from convoy.connectors.emulated.farm import load_devices
from convoy.connectors.sshkeys import ensure_agent_key, key_blob
from convoy.coordinator.api import job_artifacts, job_results, submit_job, wait_for_job
from convoy.coordinator.state import keys as keys_of
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.testcases import cases
from convoy.workers.embedded.redis_server import find_redis_server
from helpers import CONVOY, REPO, assert_all_released
from keyserver import KeyServer
from netlab import LAB_BRIDGE, NetLab, netns_problem

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(netns_problem() is not None, reason=f"no namespace lab here: {netns_problem()}")]

JOB_TIMEOUT = 300
PRIVATE = b"-----BEGIN OPENSSH PRIVATE KEY-----"


def base_env(host_state: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """What a lab component's service unit sets: PATH, HOME, its Redis URL and state directory."""
    return {"PATH": os.environ["PATH"], "HOME": str(host_state), "LANG": "C.UTF-8",
            "CONVOY_REDIS_URL": redis_url, "CONVOY_STATE_DIR": str(host_state), **extra}


def wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def private_keys(state_dir: Path) -> set[str]:
    """The public blob of every private key file under a host's state directory."""
    found = set()
    for path in state_dir.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and path.read_bytes()[:len(PRIVATE)] == PRIVATE:
                public = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True)
                found.add(key_blob(public.stdout))
        except OSError:
            continue
    return found


def assert_no_key_on_two_hosts(lab: NetLab) -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for host in lab.hosts.values():
        for blob in private_keys(host.state_dir):
            where[blob].append(host.name)
    assert where and all(len(hosts) == 1 for hosts in where.values()), dict(where)


def trusted(home: Path) -> set[str]:
    path = home / ".ssh" / "authorized_keys"
    return {key_blob(line) for line in path.read_text().splitlines() if line.strip()} if path.exists() else set()


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    lab = NetLab(tmp_path / "hosts")
    try:
        yield lab
    finally:
        lab.close()


def test_a_lab_of_hosts_runs_every_kind_of_job_and_keeps_keys_and_jobs_apart(lab: NetLab, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    # --- Redis on its own host, with one ACL user per role ------------------------------------------------
    db_host = lab.add_host("redis", 1)
    coord = lab.add_host("coordinator", 2)
    hosts = {name: lab.add_host(name, last, device_host=True) for name, last in (("h1", 11), ("h2", 12), ("h3", 13))}
    acl_file, urls_file = db_host.state_dir / "users.acl", tmp_path / "redis-urls.env"
    made = subprocess.run([CONVOY, "redis-acl", "--acl-file", str(acl_file), "--urls-file", str(urls_file),
                           "--redis-url", f"redis://{db_host.address}:6379/0"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    urls = dict(line.split("=", 1) for line in urls_file.read_text().splitlines())
    worker_url, coordinator_url = urls["CONVOY_REDIS_URL_WORKER"], urls["CONVOY_REDIS_URL_COORDINATOR"]
    server_url = urls["CONVOY_REDIS_URL_SERVER"]
    for url in urls.values():  # no password was printed
        assert url.split("@")[0].rsplit(":", 1)[1] not in made.stdout + made.stderr
    db_host.start([find_redis_server(), "--bind", db_host.address, "--port", "6379", "--protected-mode", "yes",
                   "--aclfile", str(acl_file), "--appendonly", "yes", "--dir", str(db_host.state_dir),
                   "--save", ""], {"PATH": os.environ["PATH"]}, db_host.state_dir / "redis.log")
    admin = redis_lib.Redis.from_url(coordinator_url, decode_responses=True)  # the test reads as the coordinator

    def redis_up() -> bool:
        try:
            return bool(admin.ping())
        except redis_lib.RedisError:
            return False

    wait(redis_up, 30, "Redis on its host")
    with pytest.raises(redis_lib.RedisError):  # the default user is off
        redis_lib.Redis(host=db_host.address, port=6379, socket_timeout=5).ping()

    # --- the coordinator ----------------------------------------------------------------------------------
    alice = tmp_path / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", str(alice)],
                   check=True)
    keys = KeyServer({("gh", "alice"): Path(f"{alice}.pub").read_text()}, host=lab.address(254)).start()
    coord.start([CONVOY, "coordinator"], base_env(coord.state_dir, coordinator_url, **keys.env()),
                coord.state_dir / "coordinator.log")
    # ... and convoy server beside it, on the lab's network, with the server's role: the users' front door
    coord.start([CONVOY, "server", "--bind", coord.address, "--port", "8000"],
                base_env(coord.state_dir / "server", server_url), coord.state_dir / "server.log")
    made = subprocess.run([CONVOY, "clients", "add", "alice"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CONVOY_REDIS_URL": server_url})
    assert made.returncode == 0, made.stderr
    secret = dict(line.split(": ", 1) for line in made.stdout.splitlines())["secret"]
    front = f"http://{coord.address}:8000"
    wait(lambda: _try(lambda: urllib.request.urlopen(front + "/", timeout=5).close()), 60, "convoy server")
    # a user: the server's address and alice's credentials; no Redis URL that works
    user = dataclasses.replace(load_settings(), redis_url="redis://127.0.0.1:1/0", server_url=front,
                               client_id="alice", secret_key=secret)
    user_env = {**os.environ, "CONVOY_REDIS_URL": user.redis_url, "CONVOY_SERVER": front,
                "CONVOY_CLIENT_ID": "alice", "CONVOY_SECRET_KEY": secret}

    # --- h3: a machine that is already installed (an emulated device standing in for it) ------------------
    machine_cfg = hosts["h3"].state_dir / "machine.yaml"
    machine_cfg.write_text(yaml.safe_dump([{"name": "machine", "queues": ["np"], "connector": "emulated",
                                            "config": {"bridge": LAB_BRIDGE, "address": lab.address(51)}}]))
    hosts["h3"].start([sys.executable, "-m", "convoy.connectors.emulated.farm", "--config", str(machine_cfg),
                       "--state-dir", str(hosts["h3"].state_dir)],
                      base_env(hosts["h3"].state_dir, ""), hosts["h3"].state_dir / "farm.out")
    machine_key = ensure_agent_key(hosts["h3"].state_dir / "keys")
    (machine,) = load_devices(machine_cfg)
    installed = EmulatedConnector(machine, machine_key, state_dir=hosts["h3"].state_dir)
    wait(lambda: (hosts["h3"].state_dir / "devices" / "machine").is_dir(), 30, "the machine's farm")
    wait(lambda: _try(lambda: installed.cleanup(lambda line: None)), 60, "the machine")  # installed, trusting h3
    # the one step by hand: the machine trusts h2's agent key (as `ssh-copy-id` from h2 would)
    h2_key = ensure_agent_key(hosts["h2"].state_dir / "keys")
    home = installed.paths.home
    with (home / ".ssh" / "authorized_keys").open("a") as out:
        out.write(Path(f"{h2_key}.pub").read_text())
    machine_trusts = trusted(home)

    # --- the device hosts ---------------------------------------------------------------------------------
    def emulated(name: str, last: int, queues: list[str], device_type: str) -> dict:
        return {"name": name, "queues": queues, "connector": "emulated", "device_type": device_type,
                "config": {"bridge": LAB_BRIDGE, "address": lab.address(last)}}

    agents = {
        "h1": [emulated("h1-dev1", 31, ["server-queue", "lab-a"], "lab-a"),
               emulated("h1-dev2", 32, ["client-queue-2", "lab-a"], "lab-a")],
        "h2": [emulated("h2-dev1", 41, ["client-queue-1", "lab-b"], "lab-b"),
               emulated("h2-dev2", 42, ["lab-b"], "lab-b"),
               {"name": "h3-machine", "queues": ["np"], "connector": "noprovision", "device_type": "np",
                "config": {"device_ip": lab.address(51), "username": "ubuntu"}}],
    }
    for name, devices in agents.items():
        host = hosts[name]
        agent = host.state_dir / "agent.yaml"
        agent.write_text(yaml.safe_dump({"name": f"lab-{name}", "devices": devices}))
        host.start([CONVOY, "worker", "--config", str(agent)], base_env(host.state_dir, worker_url),
                   host.state_dir / "worker.log")
    names = [d["name"] for devices in agents.values() for d in devices]
    wait(lambda: all(admin.hget(keys_of.device(n), "state") == "idle" for n in names), 120,
         f"devices {names} idle")

    # --- the jobs, submitted by a user through convoy server (the test reads Redis as the lab's operator) ----
    monkeypatch.setenv("CONVOY_REDIS_URL", coordinator_url)
    coordinated = submit_job(REPO / "examples" / "coordinated-testing.yaml", settings=user)
    lava = submit_job(lava_job(), settings=user)
    artifacts = submit_job(artifacts_job(), settings=user)
    reservation = submit_job({"job_queue": "multi",
                              "provision_data": {"jobs": [{"job_queue": "lab-a"}, {"job_queue": "np"}]},
                              "reserve_data": {"ssh_keys": ["gh:alice"], "timeout": "900"},
                              "test_data": {"test_username": "ubuntu"}}, settings=user)
    store = get_store()
    wait(lambda: "*** CONVOY SYSTEMS RESERVED ***" in store.output(reservation, "reserve"), JOB_TIMEOUT,
         "the reservation")
    reserved = [store.get(c)["device_info"] for c in store.children(reservation)]
    for info in reserved:  # alice reaches each reserved device, on both hosts' networks
        login = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(alice), "-o", "StrictHostKeyChecking=no",
                                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                                f"ubuntu@{info['device_ip']}", "true"], capture_output=True, text=True, timeout=60)
        assert login.returncode == 0, (info, login.stderr)
    assert_no_key_on_two_hosts(lab)  # the jobs' keys exist now, each on the host that made it
    release = subprocess.run([CONVOY, "release", reservation], capture_output=True, text=True, timeout=60,
                             env=user_env)
    assert release.returncode == 0, release.stderr

    for job in (coordinated, lava, artifacts, reservation):
        assert wait_for_job(job, timeout=JOB_TIMEOUT, settings=user) == "complete", job_results(job)
        results = job_results(job, settings=user)
        assert store.get(job)["submitted_by"] == "alice"
        assert results["outcome"] == "pass", json.dumps(results)[-3000:]
        assert_all_released(job)
    # the coordinated test ran across hosts: iperf3 clients on h1 and h2 measured the server on h1
    assert "iperf Done." in job_results(coordinated, settings=user)["test_output"]
    hosts_of = {store.get(c)["device"] for c in store.children(lava)}
    assert hosts_of & {"h1-dev1", "h1-dev2"} and hosts_of & {"h2-dev1", "h2-dev2"}, hosts_of
    found = {(c["suite"], c["case"]): c["result"] for child in store.children(lava)
             for c in cases(store.client, child)}
    assert found[("0_reach", "reach-server")] == "pass", found  # h2's device reached h1's over the lab

    # --- artifacts from the coordinator and both device hosts ---------------------------------------------
    for job_id in (artifacts, *store.children(artifacts)):
        archive = job_artifacts(job_id, settings=user)
        assert archive is not None, store.get(job_id).get("artifacts")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            names_in = tar.getnames()
        assert "artifacts/where.txt" in names_in, names_in

    # --- keys: none on two hosts; no device trusts a job's or a reserved user's key any more --------------
    assert_no_key_on_two_hosts(lab)
    for name, devices in agents.items():
        agent_key = key_blob(Path(f"{ensure_agent_key(hosts[name].state_dir / 'keys')}.pub").read_text())
        for device in devices:
            if device["connector"] == "emulated":
                device_home = hosts[name].state_dir / "devices" / device["name"] / "home"
                assert trusted(device_home) == {agent_key}, device["name"]
    assert trusted(home) == machine_trusts  # the noprovision machine: what it trusted before
    keys.stop()


def _try(action) -> bool:
    try:
        action()
    except Exception:  # noqa: BLE001 - not ready yet
        return False
    return True


def lava_job() -> dict:
    """A LAVA-form MultiNode job: the server role on h1's device type, the client on h2's; they meet."""
    definition = {
        "format": "Lava-Test Test Definition 1.0",
    }
    return {
        "job_name": "across hosts", "timeouts": {"job": {"minutes": 5}},
        "protocols": {"lava-multinode": {"roles": {"server": {"device_type": "lab-a", "count": 1},
                                                   "client": {"device_type": "lab-b", "count": 1}},
                                         "timeout": {"minutes": 3}}},
        "actions": [
            {"deploy": {"role": ["server", "client"], "to": "tmpfs", "os": "debian"}},
            {"boot": {"role": ["server", "client"], "method": "qemu"}},
            {"test": {"role": ["server"], "definitions": [{"from": "inline", "name": "serve", "path": "s.yaml",
                      "repository": {"metadata": {**definition, "name": "serve"}, "run": {"steps": [
                          "lava-send ready ip=$(lava-echo-ipv4 eth0)",
                          "lava-wait reached"]}}}]}},
            {"test": {"role": ["client"], "definitions": [{"from": "inline", "name": "reach", "path": "c.yaml",
                      "repository": {"metadata": {**definition, "name": "reach"}, "run": {"steps": [
                          "lava-wait ready",
                          "SERVER=$(cut -d = -f 2 /tmp/lava_multi_node_cache.txt)",
                          "lava-test-case reach-server --shell timeout 10 bash -c \"exec 3<>/dev/tcp/$SERVER/22\"",
                          "lava-send reached"]}}}]}},
        ],
    }


def artifacts_job() -> dict:
    """A job whose commands leave artifacts on the coordinator and on both device hosts."""
    leave = "mkdir -p artifacts && echo \"$CONVOY_JOB_ID\" > artifacts/where.txt"
    return {"job_queue": "multi",
            "provision_data": {"jobs": [{"job_queue": "lab-a", "test_data": {"test_cmds": leave}},
                                        {"job_queue": "lab-b", "test_data": {"test_cmds": leave}}]},
            "test_data": {"test_cmds": leave}}
