"""A device as an agent file declares it: plain data, shared by the agent loader, workers and connectors.

:func:`device_to_dict` / :func:`device_from_dict` are convoy's one codec for
handing a device to another process: the supervisor passes it to a device
worker in ``CONVOY_DEVICE_JSON``, the device farm reads it from its config file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from convoy.errors import ConvoyError


class Health(StrEnum):
    """A device's state in the registry; only ``idle`` devices can be given to a job."""

    IDLE = "idle"
    ASSIGNED = "assigned"  # chosen for a job, not yet provisioning
    BUSY = "busy"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


@dataclass(frozen=True)
class DeviceConfig:
    """One device of an agent file: its name, the queues it serves, its LAVA type and tags, its connector."""

    name: str
    queues: tuple[str, ...]
    connector: str = "emulated"
    config: dict[str, Any] = field(default_factory=dict)
    #: LAVA's ``device_type``: what a LAVA role asks for (None: no LAVA role selects this device)
    device_type: str | None = None
    #: LAVA's device tags: a role asking for tags gets a device that has them all
    tags: tuple[str, ...] = ()


def device_to_dict(device: DeviceConfig) -> dict[str, Any]:
    """``device`` as JSON-ready plain data (paths in its config become strings)."""
    return {"name": device.name, "queues": list(device.queues), "connector": device.connector,
            "device_type": device.device_type, "tags": list(device.tags),
            "config": {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in device.config.items()}}


def device_from_dict(data: Mapping[str, Any]) -> DeviceConfig:
    """The device :func:`device_to_dict` wrote (``connector`` defaults to emulated); ConvoyError if malformed."""
    try:
        return DeviceConfig(name=str(data["name"]), queues=tuple(data.get("queues") or ()),
                            connector=str(data.get("connector") or "emulated"),
                            config=dict(data.get("config") or {}),
                            device_type=str(data["device_type"]) if data.get("device_type") else None,
                            tags=tuple(str(t) for t in data.get("tags") or ()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConvoyError(f"invalid device entry {data!r}: {exc}") from None


def device_to_json(device: DeviceConfig) -> str:
    """``device`` as one line of JSON (for an environment variable or a file)."""
    return json.dumps(device_to_dict(device))


def device_from_json(text: str) -> DeviceConfig:
    """The device :func:`device_to_json` wrote; ConvoyError if ``text`` is not one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConvoyError(f"invalid device JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConvoyError(f"invalid device JSON: expected an object, got {type(data).__name__}")
    return device_from_dict(data)
