"""The noprovision connector against a real SSH server (an emulated device)."""
from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from convoy.config.devices import DeviceConfig

from convoy.connectors.base import SSHTarget
from convoy.connectors.emulated.connector import EmulatedConnector
from convoy.connectors.emulated.addresses import allocate_addresses
from convoy.connectors.emulated.farm import DeviceFarm
from convoy.connectors.noprovision import NoProvisionConnector
from convoy.connectors.registry import make_connector
from convoy.connectors.ssh import add_authorized_keys
from convoy.connectors.sshkeys import ensure_agent_key, public_key_path
from convoy.errors import DeviceError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory):
    """An SSH-reachable "machine" (an emulated device) that authorises the agent key."""
    state = tmp_path_factory.mktemp("noprovision") / "state"
    agent_key = ensure_agent_key(state / "keys")
    other = tmp_path_factory.mktemp("keys") / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with DeviceFarm([DeviceConfig("machine", ("m",))], state) as farm:
        emulated = EmulatedConnector(farm.devices[0], agent_key, state_dir=state)
        yield state, agent_key, other, emulated


@pytest.fixture(autouse=True)
def reset(machine) -> None:
    machine[3].cleanup(lambda line: None)


def noprovision(machine, **config) -> NoProvisionConnector:
    state, agent_key, _, emulated = machine
    target = emulated.ssh_target()
    device = DeviceConfig("np", ("np",), "noprovision",
                          {"device_ip": target.host, "port": target.port, **config})
    connector = make_connector(device, agent_key, state)
    assert isinstance(connector, NoProvisionConnector)
    connector.ssh_attempts = 1
    return connector


def test_provision_checks_reachability_and_reports_the_address(machine) -> None:
    connector = noprovision(machine)
    target = machine[3].ssh_target()
    lines: list[str] = []
    info = connector.provision({"anything": "ignored"}, threading.Event(), lines.append)
    assert info == {"device_ip": target.host, "ssh_port": target.port, "ssh_username": "ubuntu",
                    "device_name": "np"}
    assert connector.ssh_target() == SSHTarget(target.host, target.port, "ubuntu")
    connector.cleanup(lines.append)
    assert "nothing to clean up" in lines[-1]


def test_a_lava_deploy_that_installs_something_is_refused_naming_method_and_connector(machine) -> None:
    connector = noprovision(machine)
    with pytest.raises(DeviceError, match="noprovision connector cannot honour LAVA's deploy to: tftp"):
        connector.provision({"deploy": "tftp", "boot": "u-boot"}, threading.Event(), lambda line: None)
    info = connector.provision({"deploy": "ssh", "authorize": "ssh"}, threading.Event(), lambda line: None)
    assert info["device_name"] == "np"  # deploy to: ssh is what an installed machine is for


def test_an_unauthorised_key_file_is_a_device_error(machine) -> None:
    connector = noprovision(machine, key_file=str(machine[2]))
    with pytest.raises(DeviceError, match="not reachable over SSH") as caught:
        connector.provision({}, threading.Event(), lambda line: None)
    assert caught.value.device == "np"


def test_nothing_listening_is_a_device_error(machine) -> None:
    state, agent_key, _, _ = machine
    address = allocate_addresses(1, 22)[0]
    connector = NoProvisionConnector(DeviceConfig("gone", ("g",), "noprovision", {"device_ip": address}),
                                     agent_key)
    connector.ssh_attempts = 2
    with pytest.raises(DeviceError, match=f"ubuntu@{address}:22 after 2 attempt"):
        connector.provision({}, threading.Event(), lambda line: None)


def test_cancel_stops_the_check(machine) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DeviceError, match="cancelled"):
        noprovision(machine).provision({}, cancel, lambda line: None)


def test_adding_keys_over_ssh_is_idempotent(machine) -> None:
    _, agent_key, other, emulated = machine
    target = noprovision(machine).ssh_target()
    key = public_key_path(other).read_text().strip()
    assert add_authorized_keys(target.host, target.port, target.username, agent_key, [key]) == 1
    assert add_authorized_keys(target.host, target.port, target.username, agent_key, [key]) == 0
    assert emulated.paths.authorized_keys.read_text().count(key) == 1
    other_can_log_in = noprovision(machine, key_file=str(other))
    other_can_log_in.provision({}, threading.Event(), lambda line: None)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="device_ip is required"):
        NoProvisionConnector(DeviceConfig("np", ("np",), "noprovision", {}), tmp_path / "key")
    with pytest.raises(DeviceError, match="config.port"):
        NoProvisionConnector(DeviceConfig("np", ("np",), "noprovision", {"device_ip": "h", "port": "22"}),
                             tmp_path / "key")
