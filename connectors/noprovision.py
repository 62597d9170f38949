"""The ``noprovision`` connector: a machine that is already installed.

Provisioning only proves the machine is reachable over SSH and reports its
address; cleanup leaves it as it is.  Config keys: ``device_ip`` (required),
``port`` (22), ``username`` (``ubuntu``), ``key_file`` (default: the agent key).
A LAVA job's deploy method other than ``to: ssh`` is refused, naming it: this
connector installs nothing.  (``authorize: ssh`` holds already: the machine
trusts the key convoy logs in with.)
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

from convoy.config.devices import DeviceConfig

from convoy.connectors.base import Connector, Log, SSHTarget, validated_config
from convoy.connectors.ssh import check_ssh
from convoy.errors import DeviceError

#: the ``config`` of a ``connector: noprovision`` device (agent files are checked against it too)
CONFIG_SCHEMA: dict[str, Any] = {
    "device_ip": {"type": "string", "required": True, "empty": False},
    "port": {"type": "integer", "min": 1, "max": 65535},
    "username": {"type": "string", "check_with": "unix_user"},
    "key_file": {"type": "string", "empty": False},
}


#: LAVA deploy methods (``provision_data.deploy``) a machine that is already installed honours: ``to: ssh``
#: is LAVA's own "connect to what is there"; every other method installs something
HONOURED_DEPLOYS = frozenset({"ssh"})


class NoProvisionConnector(Connector):
    """Any SSH-reachable machine; nothing is installed or wiped."""

    name: ClassVar[str] = "noprovision"
    config_schema: ClassVar[dict[str, Any] | None] = CONFIG_SCHEMA
    ssh_attempts: int = 3
    ssh_timeout: float = 10.0

    def __init__(self, device: DeviceConfig, agent_key: Path) -> None:
        super().__init__(device, agent_key)
        config = validated_config(device, CONFIG_SCHEMA)
        self.device_ip: str = config["device_ip"]
        self.port: int = config.get("port", 22)
        self.username: str = config.get("username", "ubuntu")
        self.key_file = Path(config["key_file"]).expanduser() if config.get("key_file") else agent_key

    def ssh_target(self) -> SSHTarget:
        return SSHTarget(host=self.device_ip, port=self.port, username=self.username)

    def login_key(self) -> Path:
        return self.key_file

    def provision(self, provision_data: dict[str, Any], cancel: threading.Event, log: Log) -> dict[str, Any]:
        deploy = provision_data.get("deploy")
        if deploy is not None and deploy not in HONOURED_DEPLOYS:
            raise DeviceError(self.device.name, f"the noprovision connector cannot honour LAVA's deploy to: {deploy} "
                              "(it installs nothing on a machine that is already installed; deploy to: ssh fits it)")
        log(f"checking that {self.username}@{self.device_ip}:{self.port} is reachable over SSH")
        check_ssh(self.device.name, self.device_ip, self.port, self.username, self.key_file,
                  attempts=self.ssh_attempts, timeout=self.ssh_timeout, cancel=cancel)
        log(f"{self.device.name} is reachable; nothing to provision")
        return {"device_ip": self.device_ip, "ssh_port": self.port, "ssh_username": self.username,
                "device_name": self.device.name}

    def cleanup(self, log: Log) -> None:
        log(f"noprovision device {self.device.name}: nothing to clean up")
