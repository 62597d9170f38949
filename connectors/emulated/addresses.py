"""Where emulated devices listen: free loopback addresses (127.x.y.z), one port for all.

:func:`assign_addresses` is the one place that gives devices addresses;
the device farm, ``convoy run``, ``convoy devices`` and the embedded
cluster all call it.
"""
from __future__ import annotations

import dataclasses
import random
import socket
from collections.abc import Iterable

from convoy.config.devices import DeviceConfig
from convoy.errors import DeviceError

#: loopback addresses the host itself uses (127.0.1.1: Debian's hostname entry)
RESERVED = frozenset({"127.0.0.1", "127.0.1.1"})
FARM = "farm"  # DeviceError reads "device farm: ..."


def can_bind(address: str, port: int) -> bool:
    """Whether this process may listen on ``address:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _random_loopback() -> str:
    return f"127.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(2, 254)}"


def allocate_addresses(n: int, port: int = 22, *, exclude: Iterable[str] = ()) -> list[str]:
    """``n`` distinct random loopback addresses 127.x.y.z on which ``port`` can be bound now."""
    taken = set(RESERVED) | set(exclude)
    found: list[str] = []
    for _ in range(50 * n + 200):
        if len(found) == n:
            break
        address = _random_loopback()
        if address not in taken and can_bind(address, port):
            taken.add(address)
            found.append(address)
    if len(found) < n:
        raise DeviceError(FARM, f"cannot find {n} loopback addresses on which port {port} is free")
    return found


def default_port() -> int:
    """22 when this process may bind it (root, on a loopback address nobody holds), else 2222."""
    return 22 if can_bind(_random_loopback(), 22) else 2222


def assign_addresses(devices: Iterable[DeviceConfig]) -> list[DeviceConfig]:
    """The devices, each emulated one given a ``port`` (if it has none) and a free ``address`` (likewise).

    Without ``port``: 22 if this process may bind it, else 2222.  Devices of
    other connectors, and settings already given, are kept as they are.
    """
    devices = list(devices)
    emulated = [d for d in devices if d.connector == "emulated"]
    port = default_port() if any("port" not in d.config for d in emulated) else 22
    taken = {d.config["address"] for d in emulated if d.config.get("address")}
    assigned = []
    for device in devices:
        if device.connector == "emulated":
            config = {"port": port, **device.config}
            if not config.get("address"):
                config["address"] = allocate_addresses(1, config["port"], exclude=taken)[0]
                taken.add(config["address"])
            device = dataclasses.replace(device, config=config)
        assigned.append(device)
    return assigned
