"""The reserve phase end to end: keys from a loopback key server, real devices, real OpenSSH logins.

Real Redis, one celery worker per emulated device, the coordinator; the
users' keys are generated with ``ssh-keygen`` and served by
``tests/keyserver.py`` (the key server URLs are in the coordinator's
environment before the cluster starts).
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from convoy.config.devices import DeviceConfig
from convoy.connectors.emulated.connector import EmulatedConnector
from convoy.connectors.emulated.farm import DeviceFarm
from convoy.connectors.sshkeys import ensure_agent_key
from convoy.coordinator.api import cancel_job, job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.workers.embedded.cluster import emulated_devices

from helpers import CONVOY, assert_all_released, states_seen, unique_queue, wait_for_state
from keyserver import KeyServer

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120
BANNER = "*** CONVOY SYSTEMS RESERVED ***"


@dataclasses.dataclass
class Users:
    server: KeyServer
    alice: Path  # private keys; gh:alice and lp:bob on the key server
    bob: Path


@pytest.fixture
def users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def keygen(name: str) -> Path:
        path = tmp_path / f"{name}_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@laptop", "-f", str(path)],
                       check=True, stdin=subprocess.DEVNULL)
        return path

    alice, bob = keygen("alice"), keygen("bob")
    served = {("gh", "alice"): Path(f"{alice}.pub").read_text(), ("lp", "bob"): Path(f"{bob}.pub").read_text()}
    with KeyServer(served) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)  # before start_cluster: the coordinator inherits it
        yield Users(server, alice, bob)


def reservation(queues: list[str], ssh_keys: list[str], timeout: int = 600) -> dict:
    return {
        "job_queue": "multi",
        "provision_data": {"jobs": [{"job_queue": q, "provision_data": {"distro": "jammy"}} for q in queues]},
        "reserve_data": {"ssh_keys": ssh_keys, "timeout": str(timeout)},
        "test_data": {"test_username": "ubuntu"},
    }


def devices_of(parent_id: str) -> list[dict]:
    store = get_store()
    return [store.get(cid)["device_info"] for cid in store.children(parent_id)]


def hint(info: dict) -> str:
    """How the banner shows a device: ``ubuntu@IP``, ``(ssh -p PORT)`` after it unless the port is 22."""
    port = info.get("ssh_port", 22)
    return f"ubuntu@{info['device_ip']}" + ("" if port == 22 else f" (ssh -p {port})")


def ssh(key: Path, info: dict, command: str = "true") -> subprocess.CompletedProcess:
    """The real OpenSSH client, as a user with ``key`` would log in."""
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
         "-p", str(info["ssh_port"]), f"ubuntu@{info['device_ip']}", command],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def wait_reserved(parent_id: str) -> str:
    """Wait for the banner (or the phase's end); the reserve output so far."""
    store = get_store()
    wait_for_state(parent_id, "reserve")
    store.wait_until([parent_id], lambda: BANNER in store.output(parent_id, "reserve")
                     or "ended" in store.phases(parent_id).get("reserve", {}), JOB_TIMEOUT)
    output = store.output(parent_id, "reserve")
    assert BANNER in output, output
    return output


def test_keys_reach_every_device_and_convoy_cancel_ends_the_reservation(start_cluster, users, cluster_redis_url):
    queues = [unique_queue("rsv") for _ in range(3)]
    start_cluster({q: 1 for q in queues})
    parent = submit_job(reservation(queues, ["gh:alice", "lp:bob", "gh:alice"]))
    output = wait_reserved(parent)
    infos = devices_of(parent)
    assert len(infos) == 3
    for info in infos:
        assert f"\n{hint(info)}\n" in output
        alice = ssh(users.alice, info, "cat .ssh/authorized_keys")
        assert alice.returncode == 0, alice.stderr
        assert alice.stdout.count("alice@laptop # ssh-import-id gh:alice") == 1
        assert alice.stdout.count("bob@laptop # ssh-import-id lp:bob") == 1
        assert ssh(users.bob, info).returncode == 0
        assert f"copied keys to ubuntu@{info['device_ip']} (2 new)" in output
    # each id fetched once, not once per device (and gh:alice, listed twice, once)
    assert users.server.hits[("gh", "alice")] == 1 and users.server.hits[("lp", "bob")] == 1
    assert f"To end the reservation sooner use: convoy release {parent}" in output
    assert get_store().state(parent) == "reserve"

    cancel = subprocess.run([CONVOY, "cancel", parent], env={**os.environ, "CONVOY_REDIS_URL": cluster_redis_url},
                            capture_output=True, text=True, timeout=60)
    assert cancel.returncode == 0, cancel.stderr
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "cancelled"
    results = job_results(parent)
    assert results["reserve_status"] == 0 and results["cleanup_status"] == 0
    assert "reservation ended early by cancel" in results["reserve_output"]
    assert states_seen(parent)[-3:] == ["reserve", "cleanup", "cancelled"]
    assert_all_released(parent)
    for info in infos:  # cleanup reset authorized_keys: the reservation's keys are gone
        assert ssh(users.alice, info).returncode == 255


def test_a_device_that_cannot_take_the_keys_is_reported_and_the_others_stay_reserved(start_cluster, users):
    good_queue, bad_queue = unique_queue("ok"), unique_queue("nokeys")
    good, bad = emulated_devices({good_queue: 1, bad_queue: 1}, prefix=f"rsv-{os.getpid()}")
    # the job's test_username (ubuntu) does not exist on this device: copying the keys there fails
    bad = dataclasses.replace(bad, config={**bad.config, "username": "admin"})
    start_cluster(devices=[good, bad])
    parent = submit_job(reservation([good_queue, bad_queue], ["gh:alice"]))
    output = wait_reserved(parent)
    good_info, bad_info = devices_of(parent)
    assert f"could not copy keys to ubuntu@{bad_info['device_ip']}: " in output
    assert f"copied keys to ubuntu@{good_info['device_ip']} (1 new)" in output
    assert "1 of 2 device(s) did not get the keys; the others stay reserved" in output
    assert f"\n{hint(good_info)}\n{hint(bad_info)} -- keys NOT copied (see above)\n" in output
    assert ssh(users.alice, good_info).returncode == 0
    assert get_store().state(parent) == "reserve"

    cancel_job(parent)
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "cancelled"
    assert job_results(parent)["reserve_status"] == 0
    assert_all_released(parent)


def test_an_unknown_key_id_fails_the_reserve_phase_and_the_job_still_cleans_up(start_cluster, users):
    queues = [unique_queue("rsv404") for _ in range(2)]
    start_cluster({q: 1 for q in queues})
    parent = submit_job(reservation(queues, ["gh:alice", "gh:nobody"]))
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "fail"
    assert results["reserve_status"] == 1 and results["cleanup_status"] == 0
    output = results["reserve_output"]
    assert "could not import SSH key gh:nobody: no such GitHub user (HTTP 404" in output
    assert "no keys were copied" in output and BANNER not in output and "copied keys to" not in output
    assert users.server.hits[("gh", "nobody")] == 1  # a 404 is not retried
    assert_all_released(parent)


def test_a_reservation_ends_by_itself_at_its_timeout(start_cluster, users):
    queue = unique_queue("rsvtime")
    start_cluster({queue: 1})
    parent = submit_job(reservation([queue], ["lp:bob"], timeout=1))
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "pass" and results["reserve_status"] == 0
    assert BANNER in results["reserve_output"]
    assert "reservation timed out after 1 seconds" in results["reserve_output"]
    assert states_seen(parent) == ["waiting", "provision", "allocated", "reserve", "cleanup", "complete"]
    assert_all_released(parent)


def authorized(home: Path) -> list[str]:
    return (home / ".ssh" / "authorized_keys").read_text().split("\n")[:-1]


def test_a_noprovision_machine_forgets_the_jobs_and_reserved_users_keys(start_cluster, users, cluster_redis_url,
                                                                        tmp_path):
    state = tmp_path / "machine-host"
    machine_key = ensure_agent_key(state / "keys")
    with DeviceFarm([DeviceConfig("machine", ("m",))], state) as farm:
        emulated = EmulatedConnector(farm.devices[0], machine_key, state_dir=state)
        emulated.cleanup(lambda line: None)  # installed: it trusts its own host's key alone
        home, target = emulated.paths.home, emulated.ssh_target()
        before = authorized(home)
        queue = unique_queue("np")
        device = DeviceConfig(f"np-{os.getpid()}", (queue,), "noprovision",
                              {"device_ip": target.host, "port": target.port, "key_file": str(machine_key)})
        start_cluster(devices=[device])
        parent = submit_job({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": queue}]},
                             "reserve_data": {"ssh_keys": ["gh:alice"], "timeout": "600"},
                             "test_data": {"test_username": "ubuntu"}})
        wait_reserved(parent)
        info = get_store().get(get_store().children(parent)[0])["device_info"]
        assert ssh(users.alice, info).returncode == 0
        held = authorized(home)
        assert len(held) == len(before) + 3  # the child's key, the parent's (it copied alice's) and alice's
        release = subprocess.run([CONVOY, "release", parent], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "CONVOY_REDIS_URL": cluster_redis_url})
        assert release.returncode == 0, release.stderr
        assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
        assert_all_released(parent)
        assert authorized(home) == before  # nothing the job brought is trusted any more
        assert ssh(users.alice, info).returncode == 255
        cleanup = get_store().output(get_store().children(parent)[0], "cleanup")
        assert "removed 3 key(s) the job authorised" in cleanup, cleanup
