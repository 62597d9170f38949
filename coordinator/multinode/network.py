"""Addresses of this member for ``lava-echo-ipv4`` and ``lava-network``.

A convoy member's address is ``DEVICE_IP`` when the runner sets it (the test
commands run on the device's host, not on the device); otherwise it is read
from the named interface with ioctls and ``/proc`` - no subprocess, no
external tools.
"""
from __future__ import annotations

import re
import socket
import struct

SIOCGIFADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK = 0x8915, 0x8919, 0x891B
_IFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def valid_interface(name: str) -> bool:
    """Linux interface names: 1-15 characters, no spaces or slashes."""
    return bool(_IFACE.match(name))


def _ioctl_ipv4(iface: str, request: int) -> str | None:
    import fcntl

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            raw = fcntl.ioctl(sock.fileno(), request, struct.pack("256s", iface.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(raw[20:24])


def interface_ipv4(iface: str) -> str | None:
    """The interface's (primary) IPv4 address, or None (no such interface / no address)."""
    return _ioctl_ipv4(iface, SIOCGIFADDR)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _ipv6(iface: str) -> str | None:
    import ipaddress

    for line in _read("/proc/net/if_inet6").splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[5] == iface:
            return str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
    return None


def _gateway(iface: str) -> str | None:
    for line in _read("/proc/net/route").splitlines()[1:]:
        parts = line.split()
        if len(parts) > 3 and parts[0] == iface and parts[1] == "00000000" and int(parts[3], 16) & 2:
            return socket.inet_ntoa(struct.pack("<L", int(parts[2], 16)))
    return None


def interface_info(iface: str, device_ip: str | None = None) -> dict[str, str]:
    """The fields LAVA's ``lava-network broadcast`` sends, for what this host can see.

    With ``device_ip`` only ``ipv4`` (and the host names) are sent: the other
    fields would describe the host running the command, not the device."""
    info: dict[str, str] = {}
    if device_ip:
        info["ipv4"] = device_ip
    else:
        for key, request in (("ipv4", SIOCGIFADDR), ("netmask", SIOCGIFNETMASK), ("broadcast", SIOCGIFBRDADDR)):
            value = _ioctl_ipv4(iface, request)
            if value:
                info[key] = value
        extra = {"ipv6": _ipv6(iface), "mac": _read(f"/sys/class/net/{iface}/address").strip() or None,
                 "default-gateway": _gateway(iface)}
        info.update({k: v for k, v in extra.items() if v})
        servers = [line.split()[1] for line in _read("/etc/resolv.conf").splitlines()
                   if line.startswith("nameserver") and len(line.split()) > 1]
        info.update({f"dns_{i}": s for i, s in enumerate(servers[:3], 1)})
    info["hostname"] = socket.gethostname()
    info["hostname-full"] = info["hostname"]
    return info
