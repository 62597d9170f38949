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

import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from convoy.config.devices import DeviceConfig
from convoy.errors import DeviceError

DEFAULT_IMAGE = "emulated-default"
DEFAULT_USERNAME = "ubuntu"
#: provision_data keys that may name the image, in the order they are looked at
IMAGE_KEYS = ("distro", "url", "image", "os")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]*$", re.IGNORECASE)


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


def _number(device: str, config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise DeviceError(device, f"config.{key} must be a number >= 0, not {value!r}")
    return float(value)


def device_settings(device: DeviceConfig) -> DeviceSettings:
    """Validate ``device.config``; raise :class:`DeviceError` naming the bad key."""
    name, config = device.name, device.config
    if not _NAME_RE.match(name):
        raise DeviceError(name, "device names may hold only letters, digits, '.', '_' and '-'")
    address = config.get("address")
    if address is not None and not isinstance(address, str):
        raise DeviceError(name, f"config.address must be a string, not {address!r}")
    port = config.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise DeviceError(name, f"config.port must be a TCP port number, not {port!r}")
    username = config.get("username", DEFAULT_USERNAME)
    if not isinstance(username, str) or not _USER_RE.match(username):
        raise DeviceError(name, f"config.username is not a valid user name: {username!r}")
    home = config.get("home")
    if home is not None and not isinstance(home, (str, os.PathLike)):
        raise DeviceError(name, f"config.home must be a path, not {home!r}")
    fail = config.get("provision_fail", False)
    if not isinstance(fail, bool):
        raise DeviceError(name, f"config.provision_fail must be true or false, not {fail!r}")
    return DeviceSettings(
        address=address,
        port=port,
        username=username,
        home=Path(home).expanduser() if home is not None else None,
        provision_delay=_number(name, config, "provision_delay", 0.0),
        provision_fail=fail,
        cleanup_delay=_number(name, config, "cleanup_delay", 0.0),
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
    """Replace the device's ``authorized_keys`` with ``keys`` (``.ssh`` 0700, file 0600)."""
    paths.ssh_dir.mkdir(parents=True, exist_ok=True)
    paths.ssh_dir.chmod(0o700)
    tmp = paths.authorized_keys.with_name("authorized_keys.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(key.strip() + "\n" for key in keys if key.strip()))
    os.replace(tmp, paths.authorized_keys)


def append_authorized_keys(paths: DevicePaths, keys: list[str]) -> int:
    """Add the keys not yet listed; return how many were added."""
    present: list[str] = []
    if paths.authorized_keys.exists():
        present = [line.strip() for line in paths.authorized_keys.read_text().splitlines() if line.strip()]
    new = [key.strip() for key in keys if key.strip() and key.strip() not in present]
    write_authorized_keys(paths, present + list(dict.fromkeys(new)))
    return len(set(new))


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
