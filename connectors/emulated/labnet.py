"""A farm's lab network: one Linux bridge on a private /24, a veth pair per sandboxed device.

The host side of the bridge holds the gateway address (``.1``), so the
host (workers, the coordinator, tests) reaches every device and devices
reach each other over the bridge.  A device's default route is on-link
(``default dev eth0``, no gateway), as a lab's images have one: software that
asks for its outgoing address (``ip route get 8.8.8.8``) gets its lab address,
while an nftables rule in the device's namespace refuses every packet for
beyond the lab (on-link, the host's own addresses would answer), so nothing
beyond the lab is reachable from a device.  (Without nftables: no default
route.)

Several farms may run at once on one machine (tests start clusters
concurrently), so each farm claims its subnet with a file created
exclusively under :data:`CLAIMS` that records the pids of the farm's
processes.  The bridge's name is derived from the subnet (``cvl`` + its
three network octets in hex), each veth's from the bridge and the device's
index.  A farm killed with SIGKILL leaves its bridge and claim behind; the
next farm to plan a lab removes every claim whose pids are all dead, its
bridge, and any ``cvl*`` bridge that has no claim.  (The devices' veths go
by themselves: they die with their network namespaces.)

Everything here runs ``ip`` (iproute2); the farm runs as root.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from convoy.config.devices import DeviceConfig
from convoy.errors import DeviceError

log = logging.getLogger(__name__)

FARM = "farm"
#: where farms claim their subnets (root-only)
CLAIMS = Path("/run/convoy-labs")
#: where lab subnets are drawn from, in order: 10.200.0.0/24 .. 10.254.255.0/24, then (a host that
#: routes all of 10/8, e.g. over a VPN) 172.16-31.x.0/24, then 192.168.x.0/24
POOLS = ((10, range(200, 255)), (172, range(16, 32)), (192, range(168, 169)))
BRIDGE_PREFIX = "cvl"
_BRIDGE_RE = re.compile(rf"^{BRIDGE_PREFIX}[0-9a-f]{{6}}$")
MAX_DEVICES = 250


def is_lab_address(address: str) -> bool:
    """A private IPv4 address that is not loopback or link-local (what a lab device may be given)."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return ip.is_private and not ip.is_loopback and not ip.is_link_local and not ip.is_multicast


@dataclass(frozen=True)
class Lab:
    """One farm's lab: its network, bridge and gateway (the host's address on the bridge).

    A farm's own lab is a private /24 on a bridge it creates and claims.  An
    *external* lab is the host's own lab network: a bridge the host's admin
    set up (``config.bridge``, holding the host's address and its link to the
    lab's switch), which devices on other hosts and the coordinator reach
    directly; the farm only plugs its devices into it.
    """

    network: ipaddress.IPv4Network
    external_bridge: str | None = None
    host_address: str | None = None

    @property
    def external(self) -> bool:
        return self.external_bridge is not None

    @property
    def bridge(self) -> str:
        return self.external_bridge or BRIDGE_PREFIX + self.network.network_address.packed[:3].hex()

    @property
    def gateway(self) -> str:
        return self.host_address or str(self.network.network_address + 1)

    @property
    def claim_path(self) -> Path:
        return CLAIMS / f"{self.network.network_address}_{self.network.prefixlen}"

    def veth(self, index: int, address: str | None = None) -> str:
        if self.external and address:  # one bridge, several farms: named by the device's address
            return "cva" + ipaddress.IPv4Address(address).packed.hex()
        return f"cv{self.bridge[len(BRIDGE_PREFIX):]}d{index}"

    def describe(self) -> dict[str, str | None]:
        """What the farm's child needs to rebuild this (JSON)."""
        return {"network": str(self.network), "bridge": self.external_bridge, "host_address": self.host_address}

    @classmethod
    def from_description(cls, data: dict | str) -> Lab:
        if isinstance(data, str):
            return cls(ipaddress.IPv4Network(data))
        return cls(ipaddress.IPv4Network(data["network"]), data.get("bridge"), data.get("host_address"))

    def __str__(self) -> str:
        return f"{self.network} on {self.bridge}" if self.external else str(self.network)


def external_lab(bridge: str) -> Lab:
    """The lab network of the host's bridge ``bridge``: its IPv4 network and the host's address on it."""
    for line in _ip("-4", "-o", "addr", "show", "dev", bridge, check=False).splitlines():
        words = line.split()
        if "inet" in words:
            interface = ipaddress.IPv4Interface(words[words.index("inet") + 1])
            return Lab(interface.network, bridge, str(interface.ip))
    raise DeviceError(FARM, f"config.bridge {bridge}: no such bridge with an IPv4 address on this host")


def _ip(*args: str, batch: str | None = None, netns_pid: int | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-batch", "-"] if batch is not None else []), *args]
    if netns_pid is not None:
        argv = ["nsenter", "-t", str(netns_pid), "-n", *argv]
    result = subprocess.run(argv, input=batch, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise DeviceError(FARM, f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host routes or holds an address in (all tables)."""
    found = []
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        if not words:
            continue
        dest = words[1] if words[0] in ("local", "broadcast", "unicast", "prohibit", "blackhole",
                                        "unreachable", "throw", "anycast", "multicast") else words[0]
        if dest == "default":
            continue
        try:
            found.append(ipaddress.IPv4Network(dest, strict=False))
        except ValueError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_claim(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def collect_garbage() -> int:
    """Remove labs of dead farms (claims whose pids all died, unclaimed ``cvl*`` bridges); return how many."""
    removed = 0
    claimed = set()
    for path in sorted(CLAIMS.glob("*_*")) if CLAIMS.is_dir() else []:
        if path.suffix == ".tmp":  # add_claimant's half-written copy: litter once its writer died
            writer = path.name.rsplit(".", 2)[-2]
            if writer.isdigit() and not _alive(int(writer)):
                path.unlink(missing_ok=True)
            continue
        claim = _read_claim(path)
        pids = claim.get("pids") or []
        if pids and any(_alive(int(p)) for p in pids):
            claimed.add(claim.get("bridge"))
            continue
        if not pids and path.stat().st_size == 0:
            continue  # being written right now
        if claim.get("bridge"):
            _ip("link", "del", claim["bridge"], check=False)
        path.unlink(missing_ok=True)
        removed += 1
        log.info("removed the lab of a dead farm: %s", path.name)
    for line in _ip("-o", "link", "show", "type", "bridge").splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if _BRIDGE_RE.match(name) and name not in claimed:
            octets = bytes.fromhex(name[len(BRIDGE_PREFIX):]) + b"\0"
            network = ipaddress.IPv4Network((int.from_bytes(octets, "big"), 24))
            if not Lab(network).claim_path.exists():
                _ip("link", "del", name, check=False)
                removed += 1
    return removed


def plan_lab(devices: Iterable[DeviceConfig], *, exclude: Iterable[ipaddress.IPv4Network] = ()
             ) -> tuple[Lab, list[DeviceConfig]]:
    """A free /24 for these devices and the devices with their lab ``address`` (explicit ones kept).

    Explicit lab addresses must all lie in one /24 that the host does not
    use yet; loopback addresses (what ``assign_addresses`` gives when no
    sandbox is known) are replaced.  Every device is served on port 22.
    """
    devices = list(devices)
    emulated = [d for d in devices if d.connector == "emulated"]
    bridges = {d.config.get("bridge") for d in emulated}
    if bridges - {None}:
        return _plan_external(devices, emulated, bridges)
    if len(emulated) > MAX_DEVICES:
        raise DeviceError(FARM, f"a sandboxed farm serves at most {MAX_DEVICES} devices, got {len(emulated)}")
    given = {d.name: d.config["address"] for d in emulated if is_lab_address(str(d.config.get("address") or ""))}
    in_use = _networks_in_use() + list(exclude)
    claimed = {p.name for p in CLAIMS.glob("*_*")} if CLAIMS.is_dir() else set()
    if len(set(given.values())) < len(given):
        raise DeviceError(FARM, f"two devices have the same address: {', '.join(sorted(given.values()))}")
    if given:
        nets = {ipaddress.IPv4Network(f"{a}/24", strict=False) for a in given.values()}
        if len(nets) > 1:
            listed = ", ".join(sorted(given.values()))
            raise DeviceError(FARM, f"the lab addresses of one farm must share a /24: {listed}")
        network = nets.pop()
        busy = [n for n in in_use if n.overlaps(network)]
        if busy:
            raise DeviceError(FARM, f"lab network {network} overlaps {busy[0]}, which this host already uses")
        for name, address in given.items():
            if ipaddress.IPv4Address(address) in (network.network_address, network.network_address + 1,
                                                  network.broadcast_address):
                raise DeviceError(name, f"config.address {address} is the lab's network, gateway or broadcast address")
    else:
        for first, seconds in (pool for pool in POOLS for _ in range(200)):
            network = ipaddress.IPv4Network(f"{first}.{random.choice(seconds)}.{random.randint(0, 255)}.0/24")
            if Lab(network).claim_path.name not in claimed and not any(n.overlaps(network) for n in in_use):
                break
        else:
            raise DeviceError(FARM, "no free private /24 left for a lab network (10.200-254.x, 172.16-31.x, "
                                    "192.168.x all in use)")
    lab = Lab(network)
    taken = set(given.values())
    free = (str(h) for h in list(network.hosts())[1:] if str(h) not in taken)
    resolved = []
    for device in devices:
        if device.connector == "emulated":
            address = given.get(device.name) or next(free)
            device = dataclasses.replace(device, config={**device.config, "address": address, "port": 22})
        resolved.append(device)
    return lab, resolved


def _plan_external(devices: list[DeviceConfig], emulated: list[DeviceConfig],
                   bridges: set) -> tuple[Lab, list[DeviceConfig]]:
    """Devices on the host's own lab bridge, each at the address its agent file gives."""
    if len(bridges) > 1:
        raise DeviceError(FARM, "the emulated devices of one host share one config.bridge (or none gives one)")
    lab = external_lab(str(bridges.pop()))
    seen: set[str] = set()
    for device in emulated:
        address = str(device.config.get("address") or "")
        if not address:
            raise DeviceError(device.name, f"config.address is required on the lab bridge {lab.bridge}")
        ip = ipaddress.IPv4Address(address)
        if ip not in lab.network or ip in (lab.network.network_address, lab.network.broadcast_address):
            raise DeviceError(device.name, f"config.address {address} is not a host address of {lab.network}, "
                                           f"the network of {lab.bridge}")
        if address == lab.host_address or address in seen:
            raise DeviceError(device.name, f"config.address {address} is already taken (the host's or a device's)")
        seen.add(address)
    resolved = [dataclasses.replace(d, config={**d.config, "port": 22}) if d.connector == "emulated" else d
                for d in devices]
    return lab, resolved


def claim(lab: Lab, pid: int) -> bool:
    """Claim ``lab`` for the farm process ``pid``; False if another farm holds it."""
    CLAIMS.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(lab.claim_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"pids": [pid], "bridge": lab.bridge}, handle)
    return True


def add_claimant(lab: Lab, pid: int) -> None:
    """Record another process of the farm (the child serving it), so the lab lives while either does."""
    data = _read_claim(lab.claim_path)
    data["pids"] = sorted(set(data.get("pids") or []) | {pid})
    data["bridge"] = lab.bridge
    tmp = lab.claim_path.with_name(lab.claim_path.name + f".{pid}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, lab.claim_path)


def create_bridge(lab: Lab) -> None:
    """The bridge with the gateway address, up (a leftover of a dead farm with that name is replaced);
    an external lab's bridge is the host's, already there."""
    if lab.external:
        return
    _ip("link", "del", lab.bridge, check=False)
    _ip(batch=f"link add {lab.bridge} type bridge forward_delay 0 stp_state 0\n"
              f"addr add {lab.gateway}/{lab.network.prefixlen} dev {lab.bridge}\n"
              f"link set {lab.bridge} up\n")


def attach(lab: Lab, index: int, pid: int, address: str) -> None:
    """Give the network namespace of ``pid`` an ``eth0`` with ``address`` on the lab, and ``lo``."""
    veth = lab.veth(index, address)
    # the same MAC on every boot: the host's ARP entry for the address stays right across reboots
    mac = "02:cb:" + ":".join(f"{octet:02x}" for octet in ipaddress.IPv4Address(address).packed)
    _ip("link", "del", veth, check=False)  # the previous boot's, if its namespace still lingers
    _ip(batch=f"link add {veth} type veth peer name eth0 address {mac} netns {pid}\n"
              f"link set {veth} master {lab.bridge} up\n")
    _ip(batch=f"link set lo up\naddr add {address}/{lab.network.prefixlen} dev eth0\nlink set eth0 up\n",
        netns_pid=pid)
    if _guard(lab, pid):  # only behind the guard: on-link, the host's own addresses would answer
        _ip("route", "add", "default", "dev", "eth0", netns_pid=pid)


_warned: set[str] = set()


def _guard(lab: Lab, pid: int) -> bool:
    """Refuse what the device sends beyond its lab, and connections it opens to the gateway (the host's
    services on 0.0.0.0); whether the guard is in place.

    The host reaches the device (its replies pass); the device, lacking
    CAP_NET_ADMIN, cannot lift the rules.  Without nftables the gateway stays reachable (said once).
    """
    rules = (f"table ip convoy {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n"
             f"  oifname \"eth0\" ip daddr != {lab.network} reject with icmp type admin-prohibited\n"
             f"  ip daddr {lab.gateway} tcp flags & (syn | ack) == syn reject with tcp reset\n"
             f"  ip daddr {lab.gateway} meta l4proto udp reject\n }}\n}}\n")
    problem = "nft (nftables) is not installed" if shutil.which("nft") is None else None
    if problem is None:
        result = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "-f", "-"], input=rules,
                                capture_output=True, text=True, timeout=30)
        problem = result.stderr.strip() if result.returncode else None
    if problem and problem not in _warned:
        _warned.add(problem)
        log.warning("sandboxed devices can reach the host's gateway address and have no default route: %s",
                    problem)
    return problem is None


def detach(lab: Lab, index: int, address: str | None = None) -> None:
    _ip("link", "del", lab.veth(index, address), check=False)


def release(lab: Lab) -> None:
    """Delete the bridge, then the claim (in that order: an unclaimed bridge is garbage); an external
    lab's bridge stays (the devices' veths went with their namespaces)."""
    if lab.external:
        return
    _ip("link", "del", lab.bridge, check=False)
    lab.claim_path.unlink(missing_ok=True)
