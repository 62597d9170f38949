"""The ``multi`` connector: a placeholder for the parent of a multi-device job.

A ``job_queue: multi`` parent has no device of its own.  Its children are
provisioned by their own devices' connectors, and the parent is orchestrated
by :mod:`convoy.tasks` (a chord of the child jobs' allocate tasks, then the
parent's reserve / test / cleanup tasks) on the coordinator queue.  This
class exists so that ``multi`` is a registered connector name; a device
worker must never be asked to provision it.
"""
from __future__ import annotations

import threading
from typing import Any, ClassVar

from convoy.connectors.base import Connector, Log, SSHTarget
from convoy.errors import DeviceError

_WHY = "the multi connector is driven by the coordinator, not by a device worker"


class MultiConnector(Connector):
    """Refuses device operations: multi jobs are orchestrated by ``convoy.tasks``."""

    name: ClassVar[str] = "multi"

    def provision(self, provision_data: dict[str, Any], cancel: threading.Event, log: Log) -> dict[str, Any]:
        raise DeviceError(self.device.name, _WHY)

    def cleanup(self, log: Log) -> None:
        log(f"{self.device.name}: nothing to clean up ({_WHY})")

    def ssh_target(self) -> SSHTarget:
        raise DeviceError(self.device.name, _WHY)
