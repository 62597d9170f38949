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

    #: cleanup leaves the device trusting the agent key alone (a fresh home): nothing to revoke first
    cleanup_resets_keys: ClassVar[bool] = False

    def login_key(self) -> Path:
        """The private key this connector logs in to its device with (the agent key unless configured)."""
        return self.agent_key

    def authorize(self, key_lines: list[str], log: Log) -> None:
        """Trust ``key_lines`` (a job's keys, reserved users' keys) for the device's login user, over SSH.

        Raises :class:`DeviceError` naming the device, where it was reached and the key it refused.
        """
        from convoy.connectors.ssh import add_authorized_keys

        target, key = self.ssh_target(), self.login_key()
        try:
            added = add_authorized_keys(target.host, target.port, target.username, key, key_lines)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the device is not ready for the job
            raise DeviceError(self.device.name, f"cannot authorise the job's key on "
                              f"{target.username}@{target.host}:{target.port}: {refusal(key, exc)}") from None
        log(f"authorised {added} key(s) on {self.device.name}")

    def revoke(self, blobs: list[str], log: Log) -> None:
        """Stop trusting the keys ``blobs`` (``type base64``) on the device: what cleanup removes."""
        from convoy.connectors.ssh import remove_authorized_keys

        if not blobs or self.cleanup_resets_keys:
            return
        target, key = self.ssh_target(), self.login_key()
        try:
            removed = remove_authorized_keys(target.host, target.port, target.username, key, blobs)
        except Exception as exc:  # noqa: BLE001
            raise DeviceError(self.device.name, f"cannot remove the job's keys from "
                              f"{target.username}@{target.host}:{target.port}: {refusal(key, exc)}") from None
        log(f"removed {removed} key(s) the job authorised on {self.device.name}")


def refusal(key: Path, exc: BaseException) -> str:
    """Why a login failed, naming the key offered and this host."""
    from convoy.connectors.sshkeys import describe_key

    return f"{str(exc).strip() or type(exc).__name__} (offered {describe_key(key)})"


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
