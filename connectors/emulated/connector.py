"""The ``emulated`` connector: provisions a device served by the emulated farm.

The connector and the farm share the host's filesystem: provisioning
"reboots" the device through the farm's control socket (a sandboxed
device's processes end and its root filesystem is fresh again, see
:mod:`convoy.connectors.emulated.control`), resets the device's home
directly (see :mod:`convoy.connectors.emulated.image`), then proves the
result over real SSH with the agent key, as a connector for a physical
board would.  The device's address is the one its farm reports (a lab
address when sandboxed), else ``config.address``.  Test knobs (``provision_delay``, ``provision_fail``,
``cleanup_delay``) come from the agent file, never from jobs.  A LAVA
deploy's ``authorize: ssh`` writes root's ``authorized_keys`` inside a
sandboxed device (and is refused on one that is not).
"""
from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from convoy.config.devices import DeviceConfig

from convoy.connectors.base import Connector, Log, SSHTarget
from convoy.connectors.emulated import control
from convoy.connectors.emulated.processes import kill_device_processes
from convoy.connectors.emulated.image import (CONFIG_SCHEMA, clear_home, device_paths, device_settings,
                                              image_name, reset_home)
from convoy.connectors.ssh import authorized_keys_script, check_ssh_banner, run_ssh
from convoy.connectors.sshkeys import read_public_key
from convoy.errors import DeviceError


class EmulatedConnector(Connector):
    """Provision = wait ``provision_delay``, reset the home from the image, check SSH."""

    name: ClassVar[str] = "emulated"
    config_schema: ClassVar[dict[str, Any] | None] = CONFIG_SCHEMA
    #: SSH reachability check after provisioning
    ssh_attempts: int = 5
    ssh_timeout: float = 5.0
    #: cleanup resets the home: the job's and reserved users' keys go with it
    cleanup_resets_keys: ClassVar[bool] = True

    def __init__(self, device: DeviceConfig, agent_key: Path, *, state_dir: Path | None = None) -> None:
        super().__init__(device, agent_key)
        if state_dir is None:
            from convoy.config.settings import load_settings

            state_dir = load_settings().state_dir
        self.state_dir = Path(state_dir)
        self.settings = device_settings(device)
        if not self.settings.address:
            raise DeviceError(device.name, "config.address is required for an emulated device")
        self.address: str = self.settings.address
        self.port: int = self.settings.port
        self.sandboxed = False
        self.paths = device_paths(device, self.state_dir)
        self._asked_farm = False

    def _farm(self, command: str) -> dict[str, Any] | None:
        """Ask the farm serving this device (``info``/``reboot``); None if none serves it here."""
        try:
            reply = control.call(self.paths.root / control.SOCKET_NAME, command)
        except (OSError, ValueError) as exc:
            raise DeviceError(self.device.name, f"its device farm did not answer {command!r}: {exc}") from None
        if reply is None:
            return None
        if not reply.get("ok"):
            raise DeviceError(self.device.name, f"{command} failed: {reply.get('error', 'no reason given')}")
        self.address, self.port = str(reply["address"]), int(reply["port"])
        self.sandboxed = bool(reply.get("sandboxed"))
        self._asked_farm = True
        return reply

    def ssh_target(self) -> SSHTarget:
        if not self._asked_farm:
            self._farm("info")
        return SSHTarget(host=self.address, port=self.port, username=self.settings.username)

    def provision(self, provision_data: dict[str, Any], cancel: threading.Event, log: Log) -> dict[str, Any]:
        name, image = self.device.name, image_name(provision_data)
        log(f"provisioning {name} with image {image}")
        delay = self.settings.provision_delay
        if delay:
            log(f"emulating a {delay:g}s installation")
        cancelled = cancel.wait(delay) if delay else cancel.is_set()
        if cancelled:
            raise DeviceError(name, "provisioning cancelled")
        if self.settings.provision_fail:
            raise DeviceError(name, "provisioning failed: the agent file sets provision_fail for this device")
        agent_pub = read_public_key(self.agent_key, name)
        distro = provision_data.get("distro")
        if self._farm("reboot") and self.sandboxed:
            log(f"rebooted {name}: a fresh root filesystem, no process left")
        try:
            reset_home(self.paths, name, image, [agent_pub], distro=str(distro) if distro else None)
        except OSError as exc:
            raise DeviceError(name, f"cannot reset the home {self.paths.home}: {exc}") from None
        log(f"installed {image} into {self.paths.home}; checking its SSH server at "
            f"{self.address}:{self.port}")
        check_ssh_banner(name, self.address, self.port, attempts=self.ssh_attempts,
                         timeout=self.ssh_timeout, cancel=cancel,
                         hint=" (is the device farm serving it? see `convoy devices`)")
        if provision_data.get("authorize") is not None:
            self._authorize(provision_data["authorize"], agent_pub, log)
        log(f"{name} is ready")
        return {"device_ip": self.address, "ssh_port": self.port, "ssh_username": self.settings.username,
                "device_name": name, "image": image, "sandboxed": self.sandboxed}

    def _authorize(self, method: Any, key: str, log: Log) -> None:
        """LAVA's deploy ``authorize: ssh``: root's ``authorized_keys`` on the device trusts the key the lab
        logs in with.  Only inside a sandbox: an unsandboxed device's ``/root`` is its host's."""
        name = self.device.name
        if method != "ssh":
            raise DeviceError(name, f"the emulated connector cannot honour deploy authorize: {method} (only ssh)")
        if not self.sandboxed:
            raise DeviceError(name, "the emulated connector honours deploy authorize: ssh only on a sandboxed device "
                              "(this one's /root is its host's; see `convoy devices`)")
        script = authorized_keys_script([key])
        target = self.ssh_target()
        try:
            result = run_ssh(target.host, target.port, target.username, self.agent_key,
                             f"HOME=/root sh -c {shlex.quote(script)}", connect_timeout=self.ssh_timeout, timeout=30)
        except Exception as exc:  # noqa: BLE001 - any connection failure is this device's provisioning error
            raise DeviceError(name, "authorize: ssh: cannot log in to write /root/.ssh/authorized_keys: "
                              f"{exc}") from None
        if result.status != 0:
            raise DeviceError(name, f"authorize: ssh: writing /root/.ssh/authorized_keys failed: "
                              f"{result.stderr.strip()[-300:] or f'exit {result.status}'}")
        log(f"authorize: ssh: root's authorized_keys on {name} trusts the lab's key")

    def cleanup(self, log: Log) -> None:
        """Wipe the home; only the agent key stays authorised (reservation keys go)."""
        if self.settings.cleanup_delay:
            log(f"emulating a {self.settings.cleanup_delay:g}s cleanup")
            time.sleep(self.settings.cleanup_delay)
        reply = self._farm("reboot")
        if reply is not None and self.sandboxed:
            ended = int(reply.get("ended", 0))
        else:
            ended = kill_device_processes(self.device.name)
        if ended:
            log(f"ended {ended} process(es) still running on {self.device.name}")
        try:
            clear_home(self.paths, [read_public_key(self.agent_key, self.device.name)])
        except OSError as exc:
            raise DeviceError(self.device.name, f"cannot clean the home {self.paths.home}: {exc}") from None
        log(f"cleaned up {self.device.name}")
