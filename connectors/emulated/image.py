"""An emulated device's settings, its files on disk and its "images".

The farm (which serves the device over SSH) and the connector (which
provisions it) run in different processes on the same host; they agree on
where a device's files are only through :func:`device_paths`, and on what
its agent-file ``config`` means only through :func:`device_settings`.

Layout under ``<state_dir>/devices/<name>/``::

    ssh_host_ed25519_key(.pub)   host key, generated once, reused on restart
    home/                        the device's home (unless ``config.home``)
      .ssh/authorized_keys       re-read by the server on every login
      os-release                 what the last provisioning "installed"

Provisioning an emulated device "installs" an image by wiping its home and
writing ``os-release``; there is no root filesystem to flash.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from convoy.config.devices import DeviceConfig
from convoy.connectors.base import validated_config
from convoy.errors import DeviceError

DEFAULT_IMAGE = "emulated-default"
DEFAULT_USERNAME = "ubuntu"
#: provision_data keys that may name the image, in the order they are looked at
IMAGE_KEYS = ("distro", "url", "image", "os")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DELAY = {"coerce": "nonneg_duration", "check_with": "nonneg_duration"}


def _check_device_address(field: str, value: Any, error: Any) -> None:
    """A loopback address (unsandboxed devices) or a private lab address (sandboxed: the farm's /24)."""
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        error(field, f"not an IPv4 address: {value!r}")
        return
    lab = address.is_private and not (address.is_loopback or address.is_link_local or address.is_multicast
                                      or address.is_unspecified)
    if not (address.is_loopback or lab):
        error(field, f"an emulated device lives on a loopback address (127.0.0.0/8) or, sandboxed, on a "
                     f"private lab address (e.g. 10.x.y.z), got {value}")

#: the ``config`` of a ``connector: emulated`` device (agent files are checked against it too)
CONFIG_SCHEMA: dict[str, Any] = {
    "address": {"type": "string", "check_with": _check_device_address},
    "port": {"type": "integer", "min": 1, "max": 65535},
    "username": {"type": "string", "check_with": "unix_user"},
    "home": {"type": "string", "empty": False},
    "provision_delay": _DELAY,
    "provision_fail": {"type": "boolean"},
    "cleanup_delay": _DELAY,
    # a flat apt repository on the host (its .deb files and a Packages index) that a sandboxed device's
    # package manager installs from, as a lab without internet mirrors its distribution
    "packages": {"type": "string", "empty": False},
    # the host's own lab bridge (set up by its admin, holding the host's address on the lab network): the
    # device joins it at its config.address, reachable from every host of the lab
    "bridge": {"type": "string", "regex": r"^[A-Za-z0-9_.-]{1,15}$"},
}


@dataclass(frozen=True)
class DeviceSettings:
    """The ``config`` of a ``connector: emulated`` device, validated, defaults applied."""

    address: str | None
    port: int = 22
    username: str = DEFAULT_USERNAME
    home: Path | None = None
    provision_delay: float = 0.0
    provision_fail: bool = False
    cleanup_delay: float = 0.0
    packages: Path | None = None


@dataclass(frozen=True)
class DevicePaths:
    """Where one emulated device keeps its files."""

    root: Path
    home: Path
    host_key: Path

    @property
    def ssh_dir(self) -> Path:
        return self.home / ".ssh"

    @property
    def authorized_keys(self) -> Path:
        return self.home / ".ssh" / "authorized_keys"

    @property
    def os_release(self) -> Path:
        return self.home / "os-release"


def device_settings(device: DeviceConfig) -> DeviceSettings:
    """Validate ``device.config`` against :data:`CONFIG_SCHEMA`; raise :class:`DeviceError` naming the bad key."""
    if not _NAME_RE.match(device.name):
        raise DeviceError(device.name, "device names may hold only letters, digits, '.', '_' and '-'")
    config = validated_config(device, CONFIG_SCHEMA)
    home = config.get("home")
    return DeviceSettings(
        address=config.get("address"),
        port=config.get("port", 22),
        username=config.get("username", DEFAULT_USERNAME),
        home=Path(home).expanduser() if home is not None else None,
        provision_delay=float(config.get("provision_delay", 0.0)),
        provision_fail=config.get("provision_fail", False),
        cleanup_delay=float(config.get("cleanup_delay", 0.0)),
        packages=Path(config["packages"]).expanduser().resolve() if config.get("packages") else None,
    )


def device_paths(device: DeviceConfig, state_dir: Path) -> DevicePaths:
    """The files of ``device`` under ``state_dir`` (``config.home`` overrides the home)."""
    settings = device_settings(device)
    root = Path(state_dir) / "devices" / device.name
    home = settings.home if settings.home is not None else root / "home"
    return DevicePaths(root=root, home=home, host_key=root / "ssh_host_ed25519_key")


def image_name(provision_data: Mapping[str, Any]) -> str:
    """The image ``provision_data`` asks for (first of :data:`IMAGE_KEYS`), else the default."""
    for key in IMAGE_KEYS:
        value = provision_data.get(key)
        if value not in (None, ""):
            return str(value)
    return DEFAULT_IMAGE


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def _wipe(home: Path) -> None:
    """Empty ``home`` but keep the directory: running servers use it as a cwd."""
    home.mkdir(parents=True, exist_ok=True)
    for entry in home.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def write_authorized_keys(paths: DevicePaths, keys: list[str]) -> None:
    """Replace the device's ``authorized_keys`` with ``keys`` (``.ssh`` 0700, file 0600).

    This is the image's content (what a fresh install authorises), written
    when the home is reset; keys added to a running device go through
    :func:`convoy.connectors.ssh.add_authorized_keys`, over SSH.
    """
    paths.ssh_dir.mkdir(parents=True, exist_ok=True)
    paths.ssh_dir.chmod(0o700)
    tmp = paths.authorized_keys.with_name("authorized_keys.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(key.strip() + "\n" for key in keys if key.strip()))
    os.replace(tmp, paths.authorized_keys)


def reset_home(paths: DevicePaths, device: str, image: str, authorized: list[str],
               distro: str | None = None) -> dict[str, str]:
    """Wipe the home, "install" ``image`` (write ``os-release``), authorise ``authorized``.

    Returns the ``os-release`` fields written.
    """
    _wipe(paths.home)
    release = {"ID": "convoy-emulated", "IMAGE": _one_line(image)}
    if distro:
        release["VERSION_CODENAME"] = _one_line(distro)
    release["PROVISIONED_AT"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    release["DEVICE"] = device
    paths.os_release.write_text("".join(f"{key}={value}\n" for key, value in release.items()))
    write_authorized_keys(paths, authorized)
    return release


def clear_home(paths: DevicePaths, authorized: list[str]) -> None:
    """Wipe the home and leave only ``authorized`` keys (after a job)."""
    _wipe(paths.home)
    write_authorized_keys(paths, authorized)
