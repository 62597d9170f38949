"""Emulated devices without a server: settings, files, images, addresses, connector edge cases."""
from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from convoy.config.devices import DeviceConfig
from convoy.connectors.emulated import image
from convoy.connectors.emulated.addresses import allocate_addresses, assign_addresses, can_bind
from convoy.connectors.emulated.connector import EmulatedConnector
from convoy.connectors.emulated.farm import DeviceFarm, load_devices
from convoy.connectors.ssh import authorized_keys_script
from convoy.connectors.sshkeys import ensure_agent_key, public_key_path, read_public_key
from convoy.errors import DeviceError


def dev(name: str = "d1", **config) -> DeviceConfig:
    return DeviceConfig(name, ("q",), "emulated", {"address": "127.8.9.10", **config})


def test_settings_defaults_and_paths(tmp_path: Path) -> None:
    settings = image.device_settings(dev())
    assert (settings.port, settings.username, settings.provision_delay, settings.provision_fail,
            settings.cleanup_delay) == (22, "ubuntu", 0.0, False, 0.0)
    paths = image.device_paths(dev(), tmp_path)
    assert paths.home == tmp_path / "devices" / "d1" / "home"
    assert paths.authorized_keys == paths.home / ".ssh" / "authorized_keys"
    assert paths.host_key == tmp_path / "devices" / "d1" / "ssh_host_ed25519_key"
    assert image.device_paths(dev(home=str(tmp_path / "elsewhere")), tmp_path).home == tmp_path / "elsewhere"


@pytest.mark.parametrize("config, key", [
    ({"port": "22"}, "config.port"), ({"port": 70000}, "config.port"),
    ({"provision_delay": -1}, "config.provision_delay"), ({"cleanup_delay": "x"}, "config.cleanup_delay"),
    ({"provision_fail": "yes"}, "config.provision_fail"), ({"username": "bad user"}, "config.username"),
    ({"address": 127}, "config.address"),
])
def test_bad_settings_name_the_key(config: dict, key: str) -> None:
    with pytest.raises(DeviceError, match=key):
        image.device_settings(dev(**config))


def test_device_names_cannot_escape_the_state_dir() -> None:
    with pytest.raises(DeviceError, match="device names"):
        image.device_settings(dev(name="../x"))


@pytest.mark.parametrize("data, expected", [
    ({}, "emulated-default"), ({"distro": "noble"}, "noble"), ({"url": "http://h/i.img.xz"}, "http://h/i.img.xz"),
    ({"image": "core24"}, "core24"), ({"os": "debian"}, "debian"), ({"distro": "", "image": "x"}, "x"),
])
def test_image_name(data: dict, expected: str) -> None:
    assert image.image_name(data) == expected


def add_keys(home: Path, lines: list[str]) -> int:
    """What reserving the device does to its home: convoy's one authorized_keys writer, run by sh."""
    result = subprocess.run(["sh", "-c", authorized_keys_script(lines)], env={**os.environ, "HOME": str(home)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_reset_and_clear_home(tmp_path: Path) -> None:
    paths = image.device_paths(dev(), tmp_path)
    (paths.home / "sub").mkdir(parents=True)
    (paths.home / "sub" / "f").write_text("x")
    (paths.home / "link").symlink_to(tmp_path)
    release = image.reset_home(paths, "d1", "img\nINJECTED=1", ["ssh-ed25519 AAAA agent"], distro="noble")
    assert sorted(p.name for p in paths.home.iterdir()) == [".ssh", "os-release"]
    assert tmp_path.exists()  # the symlink was removed, not followed
    text = paths.os_release.read_text()
    assert text.startswith("ID=convoy-emulated\nIMAGE=img INJECTED=1\nVERSION_CODENAME=noble\nPROVISIONED_AT=")
    assert text.endswith("DEVICE=d1\n") and release["IMAGE"] == "img INJECTED=1"
    assert stat.S_IMODE(paths.authorized_keys.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.ssh_dir.stat().st_mode) == 0o700
    assert add_keys(paths.home, ["ssh-ed25519 BBBB user", "ssh-ed25519 AAAA agent", ""]) == 1
    assert paths.authorized_keys.read_text() == "ssh-ed25519 AAAA agent\nssh-ed25519 BBBB user\n"
    image.clear_home(paths, ["ssh-ed25519 AAAA agent"])
    assert sorted(p.name for p in paths.home.iterdir()) == [".ssh"]
    assert paths.authorized_keys.read_text() == "ssh-ed25519 AAAA agent\n"


def test_allocate_addresses_are_distinct_bindable_loopback() -> None:
    addresses = allocate_addresses(20, 2222)
    assert len(set(addresses)) == 20
    for address in addresses:
        ip = ipaddress.ip_address(address)
        assert ip.is_loopback and address not in {"127.0.0.1", "127.0.1.1"}
        assert can_bind(address, 2222)


def test_assign_addresses_fills_in_only_what_is_missing() -> None:
    given = dev("g", port=2200)
    no_port = DeviceConfig("p", ("q",), "emulated", {"address": "127.8.9.11"})
    other = DeviceConfig("n", ("q",), "noprovision", {"device_ip": "10.1.1.1"})
    blank = DeviceConfig("b", ("q",))
    g, p, n, b = assign_addresses([given, no_port, other, blank])
    assert g.config == {"address": "127.8.9.10", "port": 2200}
    assert p.config["address"] == "127.8.9.11" and p.config["port"] in (22, 2222)
    assert n == other
    assert b.config["port"] == p.config["port"] and ipaddress.ip_address(b.config["address"]).is_loopback
    assert b.config["address"] not in {"127.8.9.10", "127.8.9.11", "127.0.0.1", "127.0.1.1"}


def test_farm_resolves_missing_addresses_without_starting(tmp_path: Path) -> None:
    farm = DeviceFarm([DeviceConfig("a", ("q",)), dev("b", port=2200),
                       DeviceConfig("n", ("q",), "noprovision", {"device_ip": "10.1.1.1"})], tmp_path, sandbox=False)
    assert not farm.sandboxed
    a, b, n = farm.devices
    assert a.config["address"] != b.config["address"] and a.config["port"] in (22, 2222)
    assert b.config == {"address": "127.8.9.10", "port": 2200}
    assert n.config == {"device_ip": "10.1.1.1"}
    assert farm.pid is None


def test_load_devices_accepts_a_list_or_an_agent_style_mapping(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"name": "a", "queues": ["q"], "config": {"address": "127.1.2.3"}}]))
    mapping = tmp_path / "agent.yaml"
    mapping.write_text("devices:\n  - name: b\n    queues: [q]\n    connector: emulated\n")
    assert load_devices(listed) == [DeviceConfig("a", ("q",), "emulated", {"address": "127.1.2.3"})]
    assert load_devices(mapping) == [DeviceConfig("b", ("q",), "emulated", {})]


def test_connector_needs_an_address_and_uses_the_given_state_dir(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="config.address is required"):
        EmulatedConnector(DeviceConfig("d", ("q",)), tmp_path / "key", state_dir=tmp_path)
    connector = EmulatedConnector(dev(port=2201, username="pi"), tmp_path / "key", state_dir=tmp_path)
    assert connector.ssh_target().port == 2201 and connector.ssh_target().username == "pi"


def test_connector_default_state_dir_comes_from_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONVOY_STATE_DIR", str(tmp_path / "from-env"))
    assert EmulatedConnector(dev(), tmp_path / "key").state_dir == tmp_path / "from-env"


def test_provision_fail_and_cancel_happen_before_touching_the_home(tmp_path: Path) -> None:
    key = ensure_agent_key(tmp_path / "keys")
    failing = EmulatedConnector(dev(provision_fail=True), key, state_dir=tmp_path)
    failing.paths.home.mkdir(parents=True)
    (failing.paths.home / "keep").write_text("x")
    with pytest.raises(DeviceError, match="provision_fail"):
        failing.provision({}, threading.Event(), lambda line: None)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DeviceError, match="cancelled"):
        EmulatedConnector(dev(), key, state_dir=tmp_path).provision({}, cancel, lambda line: None)
    assert (failing.paths.home / "keep").exists()


def test_agent_key_is_created_once_with_private_permissions(tmp_path: Path) -> None:
    keys: list[Path] = []
    threads = [threading.Thread(target=lambda: keys.append(ensure_agent_key(tmp_path / "keys"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    key = keys[0]
    assert set(keys) == {tmp_path / "keys" / "agent_ed25519"}
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = read_public_key(key)
    assert public.startswith("ssh-ed25519 ")
    assert ensure_agent_key(tmp_path / "keys") == key and read_public_key(key) == public
    assert sorted(os.listdir(tmp_path / "keys")) == [".agent_ed25519.lock", "agent_ed25519", "agent_ed25519.pub"]
    public_key_path(key).unlink()
    with pytest.raises(DeviceError, match="cannot read the public key"):
        read_public_key(key, "d1")


def test_lab_plan_keeps_explicit_lab_addresses_and_replaces_loopback_ones() -> None:
    from convoy.connectors.emulated.labnet import plan_lab

    lab, (given, looped, blank, other) = plan_lab([
        DeviceConfig("g", ("q",), config={"address": "10.231.7.9"}), dev("l", port=2200), DeviceConfig("b", ("q",)),
        DeviceConfig("n", ("q",), "noprovision", {"device_ip": "10.1.1.1"})])
    assert str(lab) == "10.231.7.0/24" and lab.gateway == "10.231.7.1" and lab.bridge == "cvl0ae707"
    assert given.config == {"address": "10.231.7.9", "port": 22}
    assert looped.config["port"] == 22 and blank.config["port"] == 22
    addresses = {given.config["address"], looped.config["address"], blank.config["address"]}
    assert len(addresses) == 3 and all(a.startswith("10.231.7.") and a != lab.gateway for a in addresses)
    assert other.config == {"device_ip": "10.1.1.1"}
    assert len(lab.veth(249)) <= 15  # an interface name's limit


@pytest.mark.parametrize("addresses, message", [
    (["10.231.7.9", "10.231.8.9"], "must share a /24"), (["10.231.7.1"], "gateway"),
    (["10.231.7.255"], "broadcast"), (["10.231.7.9", "10.231.7.9"], "same address"),
])
def test_lab_plan_refuses_addresses_it_cannot_serve(addresses: list[str], message: str) -> None:
    from convoy.connectors.emulated.labnet import plan_lab

    with pytest.raises(DeviceError, match=message):
        plan_lab([DeviceConfig(f"d{i}", ("q",), config={"address": a}) for i, a in enumerate(addresses)])


def test_lab_plan_picks_a_private_net_the_host_does_not_use() -> None:
    from convoy.connectors.emulated.labnet import _networks_in_use, plan_lab

    lab, devices = plan_lab([DeviceConfig(f"d{i}", ("q",)) for i in range(3)])
    assert lab.network.is_private and lab.network.prefixlen == 24
    assert not any(n.overlaps(lab.network) for n in _networks_in_use())
    assert [d.config["address"] for d in devices] == [str(lab.network.network_address + i) for i in (2, 3, 4)]


@pytest.mark.parametrize("address, ok", [("127.3.4.5", True), ("10.200.3.4", True), ("192.168.1.9", True),
                                         ("8.8.8.8", False), ("169.254.1.1", False), ("not-an-ip", False)])
def test_device_addresses_are_loopback_or_private_lab_addresses(address: str, ok: bool) -> None:
    if ok:
        assert image.device_settings(dev(address=address)).address == address
    else:
        with pytest.raises(DeviceError, match="config.address"):
            image.device_settings(dev(address=address))


def test_sandbox_can_be_turned_off_and_says_why(monkeypatch, caplog) -> None:
    from convoy.connectors.emulated import farm
    from convoy.connectors.emulated.sandbox import sandbox_problem

    monkeypatch.setenv("CONVOY_SANDBOX", "0")
    assert sandbox_problem() == "CONVOY_SANDBOX=0"
    monkeypatch.setattr(farm, "_told", set())
    with caplog.at_level("WARNING", logger="convoy.connectors.emulated.farm"):
        assert not DeviceFarm([DeviceConfig("a", ("q",))], Path("/nonexistent")).sandboxed
        assert not DeviceFarm([DeviceConfig("b", ("q",))], Path("/nonexistent")).sandboxed
    said = [r.getMessage() for r in caplog.records]
    assert said == ["emulated devices are not sandboxed: CONVOY_SANDBOX=0"]
    with pytest.raises(DeviceError, match="lab address, but emulated devices are not sandboxed"):
        DeviceFarm([DeviceConfig("c", ("q",), config={"address": "10.231.7.9"})], Path("/nonexistent"))


def test_control_call_without_a_farm_is_none(tmp_path: Path) -> None:
    import socket

    from convoy.connectors.emulated.control import call

    assert call(tmp_path / "control.sock", "info") is None
    deep = tmp_path / ("x" * 120)
    deep.mkdir()
    with socket.socket(socket.AF_UNIX) as dead:  # a socket file nobody listens on: a farm killed with -9
        dead.bind(str(tmp_path / "c.sock"))
    assert call(tmp_path / "c.sock", "info") is None
    assert call(deep / "control.sock", "info") is None


def test_lab_plan_looks_beyond_10_8_when_the_host_routes_all_of_it(monkeypatch) -> None:
    from convoy.connectors.emulated import labnet

    monkeypatch.setattr(labnet, "_networks_in_use", lambda: [ipaddress.IPv4Network("10.0.0.0/8")])
    lab, _ = labnet.plan_lab([DeviceConfig("a", ("q",))])
    assert lab.network.is_private and not lab.network.overlaps(ipaddress.IPv4Network("10.0.0.0/8"))
    monkeypatch.setattr(labnet, "_networks_in_use", lambda: [ipaddress.IPv4Network("0.0.0.0/0")])
    with pytest.raises(DeviceError, match="no free private /24"):
        labnet.plan_lab([DeviceConfig("a", ("q",))])
