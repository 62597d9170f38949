"""Agent files: every device checked at start, with the path of each problem."""
from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from convoy.config.agents import AgentConfig, load_agent
from convoy.config.devices import DeviceConfig
from convoy.config.shown import shown
from convoy.connectors.registry import config_schemas
from convoy.errors import AgentConfigError, JobValidationError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "agents" / "emulated.yaml"
#: the installed connectors with the config schema each declares (as `convoy worker` loads agents)
INSTALLED = config_schemas()


def problems(source, known_connectors=INSTALLED) -> list[tuple[str, str]]:
    with pytest.raises(AgentConfigError) as info:
        load_agent(source, known_connectors)
    assert isinstance(info.value, JobValidationError) and info.value.what == "agent file"
    return [(e.path, e.message) for e in info.value.errors]


def test_example_agent_file():
    agent = load_agent(EXAMPLE, INSTALLED)
    assert agent == load_agent(str(EXAMPLE), INSTALLED)
    assert agent.name == "emulated-host"
    assert [d.name for d in agent.devices] == ["emulated-1", "emulated-2"]
    assert all(d.queues == ("emulated",) and d.connector == "emulated" for d in agent.devices)
    assert all("address" not in d.config for d in agent.devices)
    assert agent.devices[0].config == {"username": "ubuntu", "provision_delay": 0}
    assert agent.queues == ("emulated",)
    assert agent.device("emulated-2") is agent.devices[1]


def test_defaults_and_normalisation():
    agent = load_agent({"devices": [
        {"name": "a", "queue": "rpi4b"},
        {"name": "b", "queues": ["x", "y", "x"], "config": {"provision_delay": "1m", "cleanup_delay": 0,
                                                             "address": "127.0.3.1", "port": 2222}},
        {"name": "c", "queue": "z", "connector": "noprovision", "config": {"device_ip": "10.0.0.5"}},
        {"name": "d", "queue": "z", "config": None},
    ]}, INSTALLED)
    assert isinstance(agent, AgentConfig) and agent.name == socket.gethostname()
    assert agent.devices[0] == DeviceConfig(name="a", queues=("rpi4b",), connector="emulated", config={})
    assert agent.devices[1].queues == ("x", "y")
    assert agent.devices[1].config == {"provision_delay": 60, "cleanup_delay": 0,
                                       "address": "127.0.3.1", "port": 2222}
    assert agent.devices[2].config == {"device_ip": "10.0.0.5"}
    assert agent.devices[3].config == {}
    assert agent.queues == ("rpi4b", "x", "y", "z")
    with pytest.raises(dataclasses.FrozenInstanceError):
        agent.name = "other"  # type: ignore[misc]


BAD_AGENT = """\
name: "bad name"
surprise: 1
devices:
  - name: dev-1
    queues: [rpi4b, multi, "two words"]
    config:
      address: 8.8.8.8
      port: 0
      colour: red
      provision_delay: -1
      provision_fail: "no"
      username: "1 user"
  - name: dev-1
    queue: a
    queues: [b]
  - name: dev-3
  - just-a-string
  - name: dev-5
    queue: q
    connector: noprovision
    config: {port: "22"}
  - name: "-dash"
    queues: []
  - name: dev-7
    queue: q
    config: {address: 127.0.0.2}
  - name: dev-8
    queue: q
    config: {address: 127.0.0.2, port: 22}
"""


def test_every_problem_is_reported_with_its_path():
    assert problems(BAD_AGENT) == [
        ("name", "invalid agent name 'bad name': use letters, digits, '.', '_' or '-'"),
        ("surprise", "unknown field"),
        ("devices[0].queues[1]", "'multi' is reserved for multi jobs; a device cannot serve it"),
        ("devices[0].queues[2]", "invalid queue name 'two words': use letters, digits, '.', '_', ':' or '-', "
                                 "starting with a letter or digit, at most 128 characters"),
        ("devices[0].config.address", "an emulated device lives on a loopback address (127.0.0.0/8) or, sandboxed, "
                                      "on a private lab address (e.g. 10.x.y.z), got 8.8.8.8"),
        ("devices[0].config.colour", "unknown field"),
        ("devices[0].config.port", "min value is 1"),
        ("devices[0].config.provision_delay", "must not be negative, got -1"),
        ("devices[0].config.provision_fail", "must be of boolean type"),
        ("devices[0].config.username", "invalid user name '1 user': use lowercase letters, digits, '_' or '-', "
                                       "starting with a letter or '_' (a final '$' is allowed), at most 32 characters"),
        ("devices[1].queue", "give either `queue` or `queues`, not both"),
        ("devices[1].name", "duplicate device name 'dev-1' (also devices[0])"),
        ("devices[2].queues", "required field (a list of queues, or `queue: NAME`)"),
        ("devices[3]", "a device must be a mapping, got string"),
        ("devices[4].config.device_ip", "required field"),
        ("devices[4].config.port", "must be of integer type"),
        ("devices[5].name", "invalid device name '-dash': use letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit, at most 64 characters"),
        ("devices[5].queues", "must list at least one queue"),
        ("devices[7].config.address", "127.0.0.2 (same port) is already used by devices[6]"),
    ]


@pytest.mark.parametrize("source, expected", [
    ("[]", [("", "agent file must be a mapping, got list")]),
    ("", [("", "agent file must be a mapping, got nothing (empty document)")]),
    ("name: x\n", [("devices", "required field")]),
    ("devices: []\n", [("devices", "must list at least one device")]),
    ("devices: {a: 1}\n", [("devices", "must be of list type")]),
    ("devices: [{name: a, queue: q, config: [1]}]\n", [("devices[0].config", "must be of dict type")]),
    ("devices: [{name: a, queue: q, config: {address: nope}}]\n",
     [("devices[0].config.address", "not an IPv4 address: 'nope'")]),
    ("devices: [{name: a, queue: 3}]\n", [("devices[0].queue", "must be of string type")]),
    ("devices: [{queue: q}]\n", [("devices[0].name", "required field")]),
    ("devices: &d [{name: a, queue: q}, *d]\n",
     [("", "recursive alias *d: it refers to the collection &d that contains it at line 1, column 35")]),
    ("devices: [{name: a, queue: q, config: !!python/object/apply:os.system [true]}]\n",
     [("", "unsupported YAML tag '!!python/object/apply:os.system' (convoy reads plain YAML only) "
           "at line 1, column 39")]),
    ("devices: [{name: a, queue: q, config: {1: 2}}]\n",
     [("devices[0].config.1", "keys must be strings, got integer 1 (quote it)")]),
])
def test_bad_agent_documents(source, expected):
    assert problems(source) == expected


def test_missing_file():
    assert problems(Path("/nonexistent/agent.yaml")) == [("", "file not found: /nonexistent/agent.yaml")]


def test_unknown_connector_with_registry():
    assert problems({"devices": [{"name": "a", "queue": "q", "connector": "lxd"}]},
                    {"emulated", "noprovision"}) == [
        ("devices[0].connector", "unknown connector 'lxd' (known: emulated, noprovision)")]


def test_any_identifier_without_registry():
    agent = load_agent({"devices": [{"name": "a", "queue": "q", "connector": "vendor.board-x",
                                     "config": {"anything": [1, 2]}}]})
    assert agent.devices[0].connector == "vendor.board-x"
    assert agent.devices[0].config == {"anything": [1, 2]}
    assert problems({"devices": [{"name": "a", "queue": "q", "connector": "no spaces!"}]}, None) == [
        ("devices[0].connector", "invalid connector name 'no spaces!'")]


def test_the_installed_connectors_are_known_to_the_registry():
    from convoy.connectors.registry import available_connectors

    known = set(available_connectors())
    assert {"emulated", "noprovision"} <= known
    assert load_agent(EXAMPLE, known).devices


def test_device_type_and_tags_reach_the_device_config():
    agent = load_agent({"devices": [
        {"name": "a", "queue": "q", "device_type": "qemu", "tags": ["usb-ethernet", "hdmi", "usb-ethernet"]},
        {"name": "b", "queue": "q", "tags": []},
        {"name": "c", "queue": "q"},
    ]}, INSTALLED)
    assert (agent.devices[0].device_type, agent.devices[0].tags) == ("qemu", ("usb-ethernet", "hdmi"))
    assert (agent.devices[1].device_type, agent.devices[1].tags) == (None, ())
    assert agent.devices[2] == DeviceConfig(name="c", queues=("q",))


def test_example_agent_file_documents_type_and_tags_as_optional():
    text = EXAMPLE.read_text()
    assert "#   device_type:" in text and "#   tags:" in text
    assert all(d.device_type is None and d.tags == () for d in load_agent(EXAMPLE, INSTALLED).devices)


def test_bad_device_types_and_tags_are_reported_with_their_paths():
    assert problems({"devices": [
        {"name": "a", "queue": "q", "device_type": "two words", "tags": ["ok", "a,b", "", "tab\there", 7]},
        {"name": "b", "queue": "q", "device_type": "multi", "tags": "usb"},
        {"name": "c", "queue": "q", "device_type": 3, "tags": ["x" * 129]},
    ]}) == [
        ("devices[0].device_type", "invalid device type 'two words': use letters, digits, '.', '_', ':' or '-', "
                                   "starting with a letter or digit, at most 128 characters"),
        ("devices[0].tags[1]", "invalid tag 'a,b': 1-128 printable characters, no spaces or commas"),
        ("devices[0].tags[2]", "invalid tag '': 1-128 printable characters, no spaces or commas"),
        ("devices[0].tags[3]", "invalid tag 'tab\\there': 1-128 printable characters, no spaces or commas"),
        ("devices[0].tags[4]", "must be of string type"),
        ("devices[1].device_type", "'multi' is reserved for multi jobs; it cannot be a device type"),
        ("devices[1].tags", "must be of list type"),
        ("devices[2].device_type", "must be of string type"),
        ("devices[2].tags[0]", f"invalid tag {shown('x' * 129)}: 1-128 printable characters, no spaces or commas"),
    ]
