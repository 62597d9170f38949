"""The device this worker process serves, built once from its environment.

``convoy worker`` starts one Celery worker per device and hands it the
device's configuration in ``CONVOY_DEVICE_JSON``; tasks reach the device's
connector through :func:`current_device`.
"""
from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from convoy.config.settings import load_settings
from convoy.config.devices import DeviceConfig, device_from_json
from convoy.connectors.base import Connector
from convoy.errors import ConvoyError

DEVICE_ENV = "CONVOY_DEVICE_JSON"


@dataclass
class DeviceRuntime:
    device: DeviceConfig
    connector: Connector
    state_dir: Path
    agent_key: Path
    host: str

    @property
    def name(self) -> str:
        return self.device.name


def device_from_env() -> DeviceConfig | None:
    """The device the supervisor handed this process (``device_to_json`` in ``CONVOY_DEVICE_JSON``), if any."""
    raw = os.environ.get(DEVICE_ENV)
    return device_from_json(raw) if raw else None


@functools.lru_cache(maxsize=1)
def current_device() -> DeviceRuntime:
    """This worker's device; raises ConvoyError in a process that serves none."""
    from convoy.connectors.registry import make_connector
    from convoy.connectors.sshkeys import ensure_agent_key

    device = device_from_env()
    if device is None:
        raise ConvoyError("this worker serves no device (CONVOY_DEVICE_JSON is not set)")
    settings = load_settings()
    agent_key = ensure_agent_key(settings.keys_dir)
    connector = make_connector(device, agent_key, settings.state_dir)
    return DeviceRuntime(device=device, connector=connector, state_dir=settings.state_dir,
                         agent_key=agent_key, host=socket.gethostname())
