"""The connector interface: how one device is provisioned and cleaned up.

A connector is a small class that knows one kind of device.  The device's
worker creates one per device from the agent file and calls it for every
job: ``provision`` returns the device's ``device_info`` (at least
``device_ip``), ``cleanup`` makes the device ready for the next job.
Connectors know nothing of Celery or Redis; they report progress through the
``log`` callable and stop early when ``cancel`` is set.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from convoy.config.devices import DeviceConfig

Log = Callable[[str], None]


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom the test commands reach a device over SSH."""

    host: str
    port: int = 22
    username: str = "ubuntu"


class Connector(ABC):
    """Base class of every device connector (registered by entry point)."""

    #: the name jobs and agent files use (``connector: emulated``)
    name: ClassVar[str]

    def __init__(self, device: DeviceConfig, agent_key: Path) -> None:
        self.device = device
        #: private key the agent uses to reach its devices (public key beside it, ``.pub``)
        self.agent_key = agent_key

    @abstractmethod
    def provision(self, provision_data: dict[str, Any], cancel: threading.Event, log: Log) -> dict[str, Any]:
        """Make the device ready as ``provision_data`` asks; return ``device_info``.

        ``device_info`` holds at least ``device_ip``; ``ssh_port`` and
        ``ssh_username`` when they differ from 22 / ``ubuntu``.  Raise
        :class:`convoy.errors.DeviceError` on failure; return early (raising
        ``DeviceError``) when ``cancel`` is set.
        """

    @abstractmethod
    def cleanup(self, log: Log) -> None:
        """Return the device to a state in which the next job can provision it."""

    @abstractmethod
    def ssh_target(self) -> SSHTarget:
        """The device's SSH address, for the test commands' SSH client config."""

    def install_keys(self, public_keys: list[str], username: str, log: Log) -> None:
        """Optional hook: authorise ``public_keys`` for ``username`` (reservation)."""
        raise NotImplementedError
