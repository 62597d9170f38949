"""A lab of hosts made of network namespaces, for tests of convoy across hosts (root only).

One Linux bridge in the test's own namespace is the lab's switch, on a free
private /24 (claimed as the emulated farms claim theirs, so none picks it).
Each host is a network namespace with one link to the switch (``lan0``) and
its own address on it; a device host plugs ``lan0`` into a bridge of its own,
``br-lab``, holding the host's address, where its sandboxed emulated devices
join the lab at the addresses its agent file gives (``config.bridge``).  The
test's namespace holds ``.254`` on the switch, so the test reaches every host
as a user's machine would.  Every process a host runs is started with ``ip
netns exec``; :meth:`NetLab.close` stops them and deletes every namespace,
link and claim it made.  Nothing leaves the machine: the switch has no uplink.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from convoy.connectors.emulated import labnet

LAB_BRIDGE = "br-lab"


def netns_problem() -> str | None:
    """Why this machine cannot build a namespace lab, or None."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no ip (iproute2)"
    probe = f"cvtprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


@dataclass
class Host:
    name: str
    netns: str
    address: str
    state_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        """Run ``argv`` on this host (its namespace), with exactly ``env``, logging to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(proc)
        return proc

    def run(self, argv: list[str], env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


class NetLab:
    """The switch, the hosts on it, and what they run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tag = uuid.uuid4().hex[:4]
        labnet.collect_garbage()
        lab, _ = labnet.plan_lab([])
        if not labnet.claim(lab, os.getpid()):
            raise RuntimeError(f"cannot claim {lab} for the namespace lab")
        self.claim = lab
        self.network = lab.network
        self.switch = f"cvs{self.tag}"
        self.hosts: dict[str, Host] = {}
        _ip("link", "add", self.switch, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        _ip("addr", "add", f"{self.address(254)}/24", "dev", self.switch)
        _ip("link", "set", self.switch, "up")

    def address(self, last: int) -> str:
        return str(self.network.network_address + last)

    def add_host(self, name: str, last: int, *, device_host: bool = False) -> Host:
        """A host at ``.last`` on the switch (with a ``br-lab`` for its devices if ``device_host``)."""
        netns, veth = f"cvt{self.tag}-{name}", f"cvs{self.tag}{len(self.hosts)}"
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "lan0", "netns", netns)
        _ip("link", "set", veth, "master", self.switch, "up")
        _ip("link", "set", "lo", "up", netns=netns)
        lan = "lan0"
        if device_host:
            _ip("link", "add", LAB_BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0", netns=netns)
            _ip("link", "set", "lan0", "master", LAB_BRIDGE, netns=netns)
            _ip("link", "set", LAB_BRIDGE, "up", netns=netns)
            lan = LAB_BRIDGE
        _ip("addr", "add", f"{self.address(last)}/24", "dev", lan, netns=netns)
        _ip("link", "set", "lan0", "up", netns=netns)
        host = Host(name, netns, self.address(last), self.root / name)
        host.state_dir.mkdir(parents=True, exist_ok=True)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for proc in reversed(host.processes):
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        continue
            for proc in host.processes:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        for index in range(len(self.hosts)):  # a namespace outlives its name while sockets linger in it
            subprocess.run(["ip", "link", "del", f"cvs{self.tag}{index}"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.switch], capture_output=True)
        labnet.release(self.claim)


def in_network(address: str, network: ipaddress.IPv4Network) -> bool:
    return ipaddress.IPv4Address(address) in network
