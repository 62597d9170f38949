"""A device as an agent file declares it: plain data, shared by the agent loader, workers and connectors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeviceConfig:
    """One device of an agent file: its name, the queues it serves, its connector."""

    name: str
    queues: tuple[str, ...]
    connector: str = "emulated"
    config: dict[str, Any] = field(default_factory=dict)
