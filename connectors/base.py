"""The connector interface: how one device is provisioned and cleaned up.

A connector is a small class that knows one kind of device.  The device's
worker creates one per device from the agent file and calls it for every
job: ``provision`` returns the device's ``device_info`` (at least
``device_ip``), ``cleanup`` makes the device ready for the next job.
Connectors know nothing of Celery or Redis; they report progress through the
``log`` callable and stop early when ``cancel`` is set.  Each declares the
schema of its ``config`` (:attr:`Connector.config_schema`): agent files are
checked against it when they are loaded, and the connector checks its device
against the same schema (:func:`validated_config`).
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from convoy.config.devices import DeviceConfig
from convoy.config.schemas import run
from convoy.errors import DeviceError

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
    #: the cerberus schema of the device's ``config`` (convoy's rule names may be used);
    #: None: any mapping
    config_schema: ClassVar[dict[str, Any] | None] = None

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


def validated_config(device: DeviceConfig, schema: dict[str, Any] | None) -> dict[str, Any]:
    """``device.config`` checked against ``schema`` and normalised (defaults, ``1m`` -> 60).

    Raises :class:`DeviceError` naming every bad key (``config.port: ...``),
    with the same rules an agent file's ``devices[i].config`` is checked by.
    """
    if schema is None:
        return dict(device.config)
    config, errors = run(schema, dict(device.config), prefix="config")
    if errors:
        raise DeviceError(device.name, "; ".join(
            f"{e.path} is required for a {device.connector} device" if e.message == "required field"
            else f"{e.path}: {e.message}" for e in errors))
    return config
