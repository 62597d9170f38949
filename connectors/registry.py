"""Connector registry: connectors are found by entry point, group ``convoy.connectors``.

convoy's own connectors (emulated, noprovision) register in
``setup.cfg`` exactly as a third-party package would::

    [options.entry_points]
    convoy.connectors =
        myboard = mypackage.connector:MyBoardConnector
"""
from __future__ import annotations

import inspect
from importlib import metadata
from pathlib import Path
from typing import Any

from convoy.config.devices import DeviceConfig

from convoy.connectors.base import Connector
from convoy.errors import ConnectorLoadError, ConnectorNotFound

GROUP = "convoy.connectors"


def _entry_points() -> dict[str, metadata.EntryPoint]:
    found: dict[str, metadata.EntryPoint] = {}
    for entry_point in metadata.entry_points(group=GROUP):
        found.setdefault(entry_point.name, entry_point)  # a distribution seen twice: first wins
    return found


def available_connectors() -> list[str]:
    """The names of every registered connector, sorted."""
    return sorted(_entry_points())


def get_connector_class(name: str) -> type[Connector]:
    """The class registered as ``name``; :class:`ConnectorNotFound` lists the known names."""
    entry_points = _entry_points()
    entry_point = entry_points.get(name)
    if entry_point is None:
        raise ConnectorNotFound(name, sorted(entry_points))
    try:
        cls = entry_point.load()
    except Exception as exc:  # any import-time failure of a plugin
        raise ConnectorLoadError(name, f"{entry_point.value}: {type(exc).__name__}: {exc}") from exc
    if not (inspect.isclass(cls) and issubclass(cls, Connector)):
        raise ConnectorLoadError(name, f"{entry_point.value} is not a Connector subclass")
    return cls


def config_schemas() -> dict[str, dict[str, Any] | None]:
    """Each registered connector's ``config`` schema by name, for :func:`convoy.config.agents.load_agent`.

    Agent files are checked against what each connector declares (the
    loader in ``config`` cannot import connectors); a connector that fails
    to load maps to None here and fails, clearly, when its device is served.
    """
    schemas: dict[str, dict[str, Any] | None] = {}
    for name in available_connectors():
        try:
            schemas[name] = get_connector_class(name).config_schema
        except ConnectorLoadError:
            schemas[name] = None
    return schemas


def _accepts_state_dir(cls: type[Connector]) -> bool:
    params = inspect.signature(cls).parameters.values()
    return any(p.name == "state_dir" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def make_connector(device: DeviceConfig, agent_key: Path, state_dir: Path) -> Connector:
    """Instantiate ``device.connector`` for ``device`` (``state_dir`` only if it takes one)."""
    cls = get_connector_class(device.connector)
    if _accepts_state_dir(cls):
        return cls(device, agent_key, state_dir=state_dir)  # type: ignore[call-arg]
    return cls(device, agent_key)
