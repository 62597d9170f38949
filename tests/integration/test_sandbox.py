"""Sandboxed emulated devices: a real farm, real OpenSSH ``ssh``, commands that would harm a host.

Each device is a machine of its own (network, mount, pid, UTS namespaces on
its farm's lab bridge): what it deletes, writes or starts stays in it and is
gone after the next provision or cleanup, and it reaches neither the host's
loopback nor anything beyond the lab.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import psutil
import pytest

from convoy.config.devices import DeviceConfig
from convoy.connectors.emulated import labnet
from convoy.connectors.emulated.connector import EmulatedConnector
from convoy.connectors.emulated.farm import DeviceFarm
from convoy.connectors.emulated.processes import MARKER
from convoy.connectors.emulated.sandbox import sandbox_problem
from convoy.connectors.sshkeys import ensure_agent_key
from convoy.errors import DeviceError
from convoy.workers.embedded.lab import wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}")]

SSH_OPTS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes"]
PROBE = "/usr/convoy-sandbox-probe"


class Lab:
    def __init__(self, state: Path, key: Path, farm: DeviceFarm) -> None:
        self.state, self.key, self.farm = state, key, farm
        self.connectors = {d.name: EmulatedConnector(d, key, state_dir=state) for d in farm.devices}

    def ssh(self, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        target = self.connectors[name].ssh_target()
        return subprocess.run(["ssh", *SSH_OPTS, "-i", str(self.key), "-p", str(target.port),
                               f"{target.username}@{target.host}", command],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def provision(self, name: str, **provision_data) -> dict:
        return self.connectors[name].provision(provision_data, threading.Event(), lambda line: None)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("sandbox") / "state"
    key = ensure_agent_key(state / "keys")
    with DeviceFarm([DeviceConfig("sbx-a", ("a",)), DeviceConfig("sbx-b", ("b",))], state) as farm:
        yield Lab(state, key, farm)


def host_processes(device: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == device:
                found.append(process)
        except psutil.Error:
            continue
    return found


def host_address() -> str:
    """The host's own address beyond the lab (the one its default route leaves from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        return str(probe.getsockname()[0])


def test_a_device_cannot_harm_the_host_and_forgets_at_reboot(lab: Lab) -> None:
    info = lab.provision("sbx-a")
    assert info["sandboxed"] is True and info["ssh_port"] == 22
    assert lab.farm.lab is not None
    address = ipaddress.IPv4Address(info["device_ip"])
    assert address in lab.farm.lab.network and info["device_ip"] != lab.farm.lab.gateway
    resolv = Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").exists() else None
    with socket.socket() as host_redis, socket.socket() as host_any:  # listeners the device must not reach
        host_redis.bind(("127.0.0.1", 0))
        host_redis.listen()
        host_any.bind(("0.0.0.0", 0))
        host_any.listen()
        outside = host_address()
        socket.create_connection((outside, host_any.getsockname()[1]), timeout=5).close()  # the host can
        gateway = lab.farm.lab.gateway
        probes = {"redis": ("127.0.0.1", 6379), "host-loopback": ("127.0.0.1", host_redis.getsockname()[1]),
                  "beyond": ("192.0.2.1", 80), "host": (outside, host_any.getsockname()[1]),
                  "gateway": (gateway, host_any.getsockname()[1])}
        script = "; ".join(
            f"if timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null; then echo {name}=open; "
            f"else echo {name}=closed; fi" for name, (host, port) in probes.items())
        result = lab.ssh("sbx-a", f"rm -f /etc/resolv.conf; echo probe > {PROBE}; "
                                  f"setsid sleep 1000 </dev/null >/dev/null 2>&1 & "
                                  f"{script}; test -e /etc/resolv.conf || echo resolv-gone; cat {PROBE}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert sorted(line for line in lines if "=" in line) == sorted(f"{name}=closed" for name in probes)
    assert "resolv-gone" in lines and lines[-1] == "probe"
    assert (Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").exists() else None) == resolv
    assert not Path(PROBE).exists()
    sleepers = [p for p in host_processes("sbx-a") if p.name() == "sleep"]
    assert len(sleepers) == 1, "the background process outlives its session"
    again = lab.ssh("sbx-a", f"cat {PROBE}; test -e /etc/resolv.conf || echo resolv-gone")
    assert again.stdout.split() == ["probe", "resolv-gone"]  # same boot: the device keeps its changes

    lines_logged: list[str] = []
    lab.connectors["sbx-a"].cleanup(lines_logged.append)
    assert any("ended 1 process" in line for line in lines_logged), lines_logged
    assert wait_until(lambda: not sleepers[0].is_running() or sleepers[0].status() == psutil.STATUS_ZOMBIE,
                      timeout=10), "the background process ended"
    lab.provision("sbx-a")
    fresh = lab.ssh("sbx-a", f"test -e {PROBE} && echo probe-kept; test -e /etc/resolv.conf && echo resolv-back")
    assert fresh.stdout.split() == ["resolv-back"]


def test_a_device_is_a_machine_of_its_own(lab: Lab) -> None:
    lab.provision("sbx-a")
    home = lab.connectors["sbx-a"].paths.home
    result = lab.ssh("sbx-a", "hostname; getent hosts sbx-a | awk '{print $1}'; pwd; "
                              "cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                              "ip -4 -o addr show dev eth0 | awk '{print $4}'; "
                              "ip route get 8.8.8.8 | grep -o 'dev.*src [0-9.]*'; "
                              "echo in-home > made.txt; ls /dev | tr '\\n' ' '; echo; tty -s </dev/ptmx; "
                              "python3 -c 'import os; os.openpty()' && echo pty-ok")
    assert result.returncode == 0, result.stderr
    hostname, resolved, cwd, init, address, route, dev, pty = result.stdout.splitlines()
    assert set(dev.split()) == {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
                                "fd", "stdin", "stdout", "stderr"}, "no disk of the host's"
    assert pty == "pty-ok"
    assert hostname == "sbx-a" and resolved == "127.0.1.1" and cwd == str(home)
    assert "sandbox_init" in init  # its own pid namespace: pid 1 is the device's init
    device_ip = lab.connectors["sbx-a"].ssh_target().host
    assert address == f"{device_ip}/24"
    assert route.split() == ["dev", "eth0", "src", device_ip]  # an on-link default route: no gateway beyond
    assert (home / "made.txt").read_text() == "in-home\n"  # the home is shared with the host


def test_a_device_cannot_read_secrets_unmask_or_touch_the_host_kernel(lab: Lab) -> None:
    lab.provision("sbx-a")
    lab.provision("sbx-b")
    (lab.connectors["sbx-b"].paths.home / "secret-of-b").write_text("b")
    key = lab.key
    result = lab.ssh("sbx-a", f"cat {key} >/dev/null 2>&1 && echo key-read; ls {lab.state}; "
                              f"ls {lab.state}/devices; ls -A /root/.ssh 2>/dev/null | wc -l; "
                              f"umount {lab.state} 2>/dev/null && echo unmasked; "
                              "echo 0 2>/dev/null > /proc/sys/kernel/sysrq && echo sysctl-written; "
                              "mknod disk b 8 0 2>/dev/null && echo node-made; echo done")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["devices", "sbx-a", "0", "done"]


def test_lavas_authorize_ssh_gives_the_devices_root_the_labs_key_until_the_next_boot(lab: Lab) -> None:
    lab.provision("sbx-a", deploy="tftp", authorize="ssh")
    listed = lab.ssh("sbx-a", "stat -c %a /root/.ssh /root/.ssh/authorized_keys; cat /root/.ssh/authorized_keys")
    assert listed.returncode == 0, listed.stderr
    key = Path(f"{lab.key}.pub").read_text().split()[:2]
    assert listed.stdout.split()[:2] == ["700", "600"] and listed.stdout.split()[2:4] == key
    hosts = Path("/root/.ssh/authorized_keys")
    assert not hosts.exists() or key[1] not in hosts.read_text()  # the host's root trusts nothing new
    lab.provision("sbx-a")  # a new boot without it: gone
    again = lab.ssh("sbx-a", "ls -A /root/.ssh 2>/dev/null | wc -l")
    assert again.stdout.split() == ["0"], again.stdout + again.stderr
    with pytest.raises(DeviceError, match="cannot honour deploy authorize: keys"):
        lab.provision("sbx-a", authorize="keys")


def test_devices_reach_each_other_over_the_lab(lab: Lab) -> None:
    lab.provision("sbx-a")
    b = lab.provision("sbx-b")["device_ip"]
    server = lab.ssh("sbx-b", f"iperf3 -s -1 -D -B {b}")
    assert server.returncode == 0, server.stderr
    client = lab.ssh("sbx-a", f"for i in $(seq 100); do iperf3 -c {b} -n 10M -f m >out.txt 2>&1 && break; "
                              "sleep 0.1; done; cat out.txt")  # until the server listens (at most 10 s)
    assert client.returncode == 0 and "receiver" in client.stdout, client.stdout + client.stderr


def test_a_killed_farm_leaves_nothing_that_breaks_the_next(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = labnet.Lab(labnet.plan_lab([DeviceConfig("x", ("x",))])[0].network)
    assert labnet.claim(stale, dead.pid)  # what a farm killed with -9 leaves behind
    labnet.create_bridge(stale)
    state = tmp_path / "state"
    key = ensure_agent_key(state / "keys")
    farm = DeviceFarm([DeviceConfig("sbx-k", ("k",))], state).start()
    try:
        assert not stale.claim_path.exists() and not _link_exists(stale.bridge), "garbage-collected"
        connector = EmulatedConnector(farm.device("sbx-k"), key, state_dir=state)
        connector.provision({}, threading.Event(), lambda line: None)
        assert farm.pid is not None
        os.kill(farm.pid, signal.SIGKILL)
        assert farm.lab is not None
        assert wait_until(lambda: not host_processes("sbx-k") and not _link_exists(farm.lab.veth(0)), timeout=10), \
            "the device dies with its farm"
    finally:
        farm.stop()
    assert farm.lab is not None and not _link_exists(farm.lab.bridge) and not farm.lab.claim_path.exists()


def test_without_a_sandbox_devices_run_on_the_host(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = ensure_agent_key(state / "keys")
    with DeviceFarm([DeviceConfig("plain", ("p",))], state, sandbox=False) as farm:
        connector = EmulatedConnector(farm.device("plain"), key, state_dir=state)
        info = connector.provision({}, threading.Event(), lambda line: None)
        assert info["sandboxed"] is False and info["device_ip"].startswith("127.")
        target = connector.ssh_target()
        result = subprocess.run(["ssh", *SSH_OPTS, "-i", str(key), "-p", str(target.port),
                                 f"ubuntu@{target.host}", "hostname"], capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == socket.gethostname()


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def test_serve_devices_in_process_claims_and_releases_its_lab(tmp_path: Path) -> None:
    """What ``convoy devices`` runs: the farm in this process, its lab claimed here; workers learn the address."""
    from convoy.connectors.emulated.farm import serve_devices

    state = tmp_path / "state"
    key = ensure_agent_key(state / "keys")
    device = DeviceConfig("sbx-t", ("t",), config={"address": "127.0.0.5"})  # what assign_addresses gave
    ready, stop, served, errors = threading.Event(), threading.Event(), [], []

    def serve() -> None:
        try:
            served.extend(serve_devices([device], state, ready, stop=stop))
        except Exception as exc:  # noqa: BLE001 - surfaced by the asserts below
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(30), errors
        connector = EmulatedConnector(device, key, state_dir=state)
        info = connector.provision({}, threading.Event(), lambda line: None)
        assert info["sandboxed"] and info["device_ip"] != "127.0.0.5"
        bridges = [line.split()[0] for line in subprocess.run(["ip", "-br", "link", "show", "type", "bridge"],
                                                              capture_output=True, text=True).stdout.splitlines()]
        lab = labnet.Lab(ipaddress.IPv4Network(f"{info['device_ip']}/24", strict=False))
        assert lab.bridge in bridges and lab.claim_path.exists()
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not errors
    assert served[0].config["address"] == info["device_ip"]
    assert not _link_exists(lab.bridge) and not lab.claim_path.exists()


def test_convoy_devices_prints_the_lab_address_its_devices_are_served_on(tmp_path: Path) -> None:
    """``convoy devices`` says where a user reaches each device: its lab address, which answers SSH."""
    import sys

    import yaml

    agent = tmp_path / "agent.yaml"
    agent.write_text(yaml.safe_dump({"name": "cli-host", "devices": [{"name": "sbx-cli", "queues": ["cli"]}]}))
    env = {**os.environ, "CONVOY_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "convoy"), "devices", "--config", str(agent)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("convoy devices: sbx-cli at "), line
        address = line.split(" at ")[1].split(":")[0]
        assert ipaddress.IPv4Address(address).is_private and not ipaddress.IPv4Address(address).is_loopback
        bridge = labnet.Lab(ipaddress.IPv4Network(f"{address}/24", strict=False)).bridge
        assert wait_until(lambda: _answers_ssh(address), timeout=30), f"no SSH banner at {address}:22"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert not _link_exists(bridge)


def _answers_ssh(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=2) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def test_a_claim_copy_left_by_a_dead_writer_is_removed_and_a_live_ones_is_kept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    labnet.CLAIMS.mkdir(parents=True, exist_ok=True)
    litter = labnet.CLAIMS / f"10.254.254.0_24.{dead.pid}.tmp"
    live = labnet.CLAIMS / f"10.254.253.0_24.{os.getpid()}.tmp"
    litter.write_text("")
    live.write_text("")
    try:
        labnet.collect_garbage()
        assert not litter.exists() and live.exists()
    finally:
        litter.unlink(missing_ok=True)
        live.unlink(missing_ok=True)
