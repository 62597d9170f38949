"""The connector registry: entry points, including a third-party connector."""
from __future__ import annotations

import sys
import textwrap
import threading
from importlib import metadata
from pathlib import Path

import pytest

from convoy.connectors import registry
from convoy.config.devices import DeviceConfig
from convoy.connectors.emulated.connector import EmulatedConnector
from convoy.connectors.noprovision import NoProvisionConnector
from convoy.errors import ConnectorLoadError, ConnectorNotFound, DeviceError

PLUGIN = textwrap.dedent('''
    from convoy.connectors.base import Connector, SSHTarget

    class BoardConnector(Connector):
        name = "board"
        def provision(self, provision_data, cancel, log):
            return {"device_ip": self.device.config["ip"]}
        def cleanup(self, log):
            pass
        def ssh_target(self):
            return SSHTarget(self.device.config["ip"])

    class StatefulConnector(BoardConnector):
        name = "stateful"
        def __init__(self, device, agent_key, *, state_dir=None):
            super().__init__(device, agent_key)
            self.state_dir = state_dir

    class NotAConnector:
        pass
''')


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package registering connectors next to convoy's own."""
    (tmp_path / "convoy_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = metadata.entry_points
    extra = [metadata.EntryPoint(name, value, registry.GROUP) for name, value in
             [("board", "convoy_test_plugin:BoardConnector"), ("stateful", "convoy_test_plugin:StatefulConnector"),
              ("bogus", "convoy_test_plugin:NotAConnector"), ("broken", "convoy_test_no_such_module:X")]]

    def entry_points(**params):
        found = list(real(**params))
        return found + extra if params.get("group") == registry.GROUP else found

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    yield
    sys.modules.pop("convoy_test_plugin", None)


def test_convoy_connectors_are_registered() -> None:
    assert {"emulated", "noprovision"} <= set(registry.available_connectors())
    assert registry.get_connector_class("emulated") is EmulatedConnector
    assert registry.get_connector_class("noprovision") is NoProvisionConnector
    assert "multi" not in registry.available_connectors()  # a multi job's parent needs no device


def test_unknown_connector_lists_the_known_ones() -> None:
    with pytest.raises(ConnectorNotFound) as caught:
        registry.get_connector_class("maas-but-misspelt")
    assert {"emulated", "noprovision"} <= set(caught.value.known)
    assert "emulated" in str(caught.value) and "maas-but-misspelt" in str(caught.value)


def test_a_third_party_connector_registers_by_entry_point(plugin, tmp_path: Path) -> None:
    assert {"board", "stateful", "emulated"} <= set(registry.available_connectors())
    device = DeviceConfig("b1", ("q",), "board", {"ip": "10.0.0.7"})
    connector = registry.make_connector(device, tmp_path / "key", tmp_path / "state")
    assert type(connector).__name__ == "BoardConnector"
    assert connector.provision({}, threading.Event(), print) == {"device_ip": "10.0.0.7"}


def test_state_dir_goes_only_to_connectors_that_take_it(plugin, tmp_path: Path) -> None:
    stateful = registry.make_connector(DeviceConfig("s", ("q",), "stateful", {"ip": "h"}),
                                       tmp_path / "key", tmp_path / "state")
    assert stateful.state_dir == tmp_path / "state"  # type: ignore[attr-defined]
    emulated = registry.make_connector(DeviceConfig("e", ("q",), "emulated", {"address": "127.3.4.5"}),
                                       tmp_path / "key", tmp_path / "state")
    assert isinstance(emulated, EmulatedConnector) and emulated.state_dir == tmp_path / "state"
    assert emulated.paths.home == tmp_path / "state" / "devices" / "e" / "home"


def test_bad_entry_points_are_clear_errors(plugin) -> None:
    with pytest.raises(ConnectorLoadError, match="not a Connector subclass"):
        registry.get_connector_class("bogus")
    with pytest.raises(ConnectorLoadError, match="ModuleNotFoundError"):
        registry.get_connector_class("broken")
