"""Agent files: the devices one host serves, and the queues each consumes.

A host's worker is started from one of these (``convoy worker --config
agent.yaml``).  The file is validated whole -- every device, its connector and
the connector's own settings -- so a typo stops the agent at start instead of
failing the first job that lands on the device.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from collections.abc import Collection, Mapping
from typing import Any

from convoy.config.jobs import check_plain_data, kind_of
from convoy.config.schemas import AGENT, CONNECTOR_RE, DEVICE, MAX_DEVICES, run
from convoy.config.shown import shown
from convoy.config.yamlsafe import read_document
from convoy.config.devices import DeviceConfig
from convoy.errors import AgentConfigError, FieldError, JobValidationError

__all__ = ["AgentConfig", "DeviceConfig", "KnownConnectors", "load_agent", "validate_agent"]

#: the installed connectors: their names, or each name with its ``config`` schema (None: any mapping)
KnownConnectors = Collection[str] | Mapping[str, dict | None]


@dataclass(frozen=True)
class AgentConfig:
    """A validated agent file: the host's name and its devices, in file order."""

    name: str
    devices: tuple[DeviceConfig, ...]

    def device(self, name: str) -> DeviceConfig:
        """The device called ``name`` (KeyError if none)."""
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue some device of this host serves, once, in file order."""
        return tuple(dict.fromkeys(q for d in self.devices for q in d.queues))


def load_agent(source: dict | str | os.PathLike, known_connectors: KnownConnectors | None = None) -> AgentConfig:
    """Load (dict, YAML text, or a .yaml/.yml/.json path) and validate an agent file.

    ``known_connectors``: the installed connectors (the caller asks the
    registry: ``config_schemas()`` also checks each device's ``config``
    against the schema its connector declares); None accepts any
    well-formed name and any ``config``.
    """
    try:
        doc = read_document(source)
    except JobValidationError as exc:
        raise AgentConfigError(exc.errors) from None
    return validate_agent(doc, known_connectors)


def validate_agent(doc: Any, known_connectors: KnownConnectors | None = None) -> AgentConfig:
    """Validate an agent document; raise AgentConfigError listing every problem."""
    if not isinstance(doc, dict):
        raise AgentConfigError([FieldError("", f"agent file must be a mapping, got {kind_of(doc)}")])
    errors = check_plain_data(doc)
    if errors:
        raise AgentConfigError(errors)
    agent, errors = run(AGENT, doc)
    raw = agent.get("devices")
    if not isinstance(raw, list) or len(raw) > MAX_DEVICES:
        raw = []
    connectors = set(known_connectors) if known_connectors is not None else None
    schemas = dict(known_connectors) if isinstance(known_connectors, Mapping) else {}
    first_seen: dict[str, int] = {}
    endpoints: dict[tuple[str, Any], int] = {}
    devices: list[dict] = []
    for index, entry in enumerate(raw):
        path = f"devices[{index}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(path, f"a device must be a mapping, got {kind_of(entry)}"))
            continue
        device, device_errors = run(DEVICE, entry, prefix=path)
        errors.extend(device_errors)
        devices.append(device)
        if "queue" not in device and "queues" not in device:
            errors.append(FieldError(f"{path}.queues", "required field (a list of queues, or `queue: NAME`)"))
        elif "queue" in device and "queues" in device:
            errors.append(FieldError(f"{path}.queue", "give either `queue` or `queues`, not both"))
        name = device.get("name")
        if isinstance(name, str):
            if name in first_seen:
                errors.append(FieldError(f"{path}.name", f"duplicate device name {name!r} "
                                                         f"(also devices[{first_seen[name]}])"))
            else:
                first_seen[name] = index
        errors.extend(_check_connector(device, path, connectors, schemas, endpoints, index))
    if errors:
        raise AgentConfigError(errors)
    return AgentConfig(
        name=agent.get("name") or socket.gethostname(),
        devices=tuple(_device(d) for d in devices),
    )


def _check_connector(device: dict, path: str, connectors: set[str] | None, schemas: Mapping[str, dict | None],
                     endpoints: dict[tuple[str, Any], int], index: int) -> list[FieldError]:
    """Check the connector's name and, where its schema is known, its ``config``; normalise it in place."""
    connector = device.get("connector")
    if not isinstance(connector, str):
        return []
    if connectors is not None and connector not in connectors:
        known = ", ".join(sorted(connectors)) or "none installed"
        return [FieldError(f"{path}.connector", f"unknown connector {shown(connector)} (known: {known})")]
    if connectors is None and not CONNECTOR_RE.fullmatch(connector):
        return [FieldError(f"{path}.connector", f"invalid connector name {shown(connector)}")]
    schema = schemas.get(connector)
    config = device.get("config")
    if schema is None or not isinstance(config, dict):
        return []
    normalised, errors = run(schema, config, prefix=f"{path}.config")
    device["config"] = normalised
    if connector == "emulated" and not errors and "address" in normalised:
        endpoint = (normalised["address"], normalised.get("port", 22))
        if endpoint in endpoints:
            errors.append(FieldError(f"{path}.config.address", f"{normalised['address']} (same port) is "
                                                               f"already used by devices[{endpoints[endpoint]}]"))
        endpoints.setdefault(endpoint, index)
    return errors


def _device(device: dict) -> DeviceConfig:
    queues = device.get("queues") or [device["queue"]]
    return DeviceConfig(
        name=device["name"],
        queues=tuple(dict.fromkeys(queues)),
        connector=device["connector"],
        config=dict(device["config"]),
        device_type=device.get("device_type"),
        tags=tuple(dict.fromkeys(device.get("tags") or ())),
    )
