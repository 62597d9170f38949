"""The ``noprovision`` connector: a machine that is already installed.

Provisioning only proves the machine is reachable over SSH and reports its
address; cleanup leaves it as it is.  Config keys: ``device_ip`` (required),
``port`` (22), ``username`` (``ubuntu``), ``key_file`` (default: the agent key).
"""
from __future__ import annotations

import shlex
import threading
from pathlib import Path
from typing import Any, ClassVar

from convoy.config.devices import DeviceConfig

from convoy.connectors.base import Connector, Log, SSHTarget
from convoy.connectors.sshkeys import check_ssh, run_ssh
from convoy.errors import DeviceError


class NoProvisionConnector(Connector):
    """Any SSH-reachable machine; nothing is installed or wiped."""

    name: ClassVar[str] = "noprovision"
    ssh_attempts: int = 3
    ssh_timeout: float = 10.0

    def __init__(self, device: DeviceConfig, agent_key: Path) -> None:
        super().__init__(device, agent_key)
        config = device.config
        ip = config.get("device_ip")
        if not isinstance(ip, str) or not ip:
            raise DeviceError(device.name, "config.device_ip is required for a noprovision device")
        port = config.get("port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise DeviceError(device.name, f"config.port must be a TCP port number, not {port!r}")
        username = config.get("username", "ubuntu")
        if not isinstance(username, str) or not username:
            raise DeviceError(device.name, f"config.username must be a user name, not {username!r}")
        self.device_ip, self.port, self.username = ip, port, username
        self.key_file = Path(config["key_file"]).expanduser() if config.get("key_file") else agent_key

    def ssh_target(self) -> SSHTarget:
        return SSHTarget(host=self.device_ip, port=self.port, username=self.username)

    def provision(self, provision_data: dict[str, Any], cancel: threading.Event, log: Log) -> dict[str, Any]:
        log(f"checking that {self.username}@{self.device_ip}:{self.port} is reachable over SSH")
        check_ssh(self.device.name, self.device_ip, self.port, self.username, self.key_file,
                  attempts=self.ssh_attempts, timeout=self.ssh_timeout, cancel=cancel)
        log(f"{self.device.name} is reachable; nothing to provision")
        return {"device_ip": self.device_ip, "ssh_port": self.port, "ssh_username": self.username,
                "device_name": self.device.name}

    def cleanup(self, log: Log) -> None:
        log(f"noprovision device {self.device.name}: nothing to clean up")

    def install_keys(self, public_keys: list[str], username: str, log: Log) -> None:
        """Append the keys to ``~/.ssh/authorized_keys`` over SSH (as ``ssh-copy-id`` would)."""
        keys = "".join(key.strip() + "\n" for key in public_keys if key.strip())
        script = ("umask 077; mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && "
                  "while IFS= read -r k; do grep -qxF \"$k\" ~/.ssh/authorized_keys || "
                  "printf '%s\\n' \"$k\" >> ~/.ssh/authorized_keys; done")
        try:
            result = run_ssh(self.device_ip, self.port, username, self.key_file,
                             "sh -c " + shlex.quote(script), stdin=keys, timeout=self.ssh_timeout)
        except Exception as exc:  # paramiko's errors are many; all mean the same here
            raise DeviceError(self.device.name, f"cannot install keys over SSH: {exc}") from None
        if result.status != 0:
            raise DeviceError(self.device.name, f"installing keys failed: {result.stderr.strip()}")
        log(f"authorised {len(public_keys)} key(s) for {username} on {self.device.name}")
