"""The lava-* calls' argument checks (shared by the commands and the relay), cache files, interfaces."""
from __future__ import annotations

import pytest

from convoy.coordinator.multinode import args, cachefile, network
from convoy.errors import MultiNodeUsageError


@pytest.mark.parametrize("argv, data", [
    ([], {}),
    (["a=1", "b=two words"], {"a": "1", "b": "two words"}),
    (["url=http://x/?a=b=c", "empty="], {"url": "http://x/?a=b=c", "empty": ""}),
    (["k=1", "k=2"], {"k": "2"}),
])
def test_key_values_split_on_the_first_equals(argv, data):
    assert args._key_values(argv) == data


@pytest.mark.parametrize("arg", ["novalue", "=3", "a key=1", "k=line\nbreak"])
def test_bad_key_values_are_usage_errors(arg):
    with pytest.raises(MultiNodeUsageError):
        args._key_values([arg])


@pytest.mark.parametrize("arg", ["k=\udcff", "k=caf\udce9 au lait"])
def test_values_that_are_not_utf8_are_refused_naming_the_key(arg):
    """``lava-send id k=$'\\xff'``: Python hands such bytes over as lone surrogates."""
    with pytest.raises(MultiNodeUsageError, match="bad value for 'k': not valid UTF-8"):
        args._key_values([arg])


def test_utf8_text_of_any_script_is_a_value():
    assert args._key_values(["k=caf\u00e9 \u2713 \u4e2d\t"]) == {"k": "caf\u00e9 \u2713 \u4e2d\t"}


@pytest.mark.parametrize("mid", ["", "a b", "a=b", "x" * 257, "tab\there", "\udcff", "id\x1b"])
def test_bad_message_ids(mid):
    with pytest.raises(MultiNodeUsageError):
        args._message_id([mid])


def test_missing_message_id():
    with pytest.raises(MultiNodeUsageError, match="missing message id"):
        args._message_id([])


@pytest.mark.parametrize("argv, timeout, rest", [
    (["x"], None, ["x"]),
    (["--timeout", "2.5", "x"], 2.5, ["x"]),
    (["--timeout=3", "x", "role"], 3.0, ["x", "role"]),
    (["--", "x"], None, ["x"]),
])
def test_timeout_option_comes_before_the_message_id(argv, timeout, rest):
    assert args._options(list(argv), timeout_ok=True) == (timeout, rest)


@pytest.mark.parametrize("argv", [["--timeout"], ["--timeout", "0", "x"], ["--timeout=-1", "x"],
                                  ["--timeout", "soon", "x"], ["--frobnicate", "x"]])
def test_bad_options(argv):
    with pytest.raises(MultiNodeUsageError):
        args._options(list(argv), timeout_ok=True)


def test_send_takes_no_timeout_option():
    with pytest.raises(MultiNodeUsageError):
        args._options(["--timeout", "3", "x"], timeout_ok=False)


def test_cache_file_formats(tmp_path):
    received = {"101": {"ip": "10.0.0.1", "msg": "a b=c"}, "102": {}, "103": {"ip": "10.0.0.3"}}
    assert cachefile.wait_lines(received) == ["ip=10.0.0.1", "msg=a b=c", "ip=10.0.0.3"]
    assert cachefile.wait_all_lines(received) == ["101:ip=10.0.0.1", "101:msg=a b=c", "103:ip=10.0.0.3"]
    path = tmp_path / "sub" / "cache.txt"
    cachefile.write(str(path), ["a=1"])
    assert path.read_text() == "a=1\n"
    cachefile.write(str(path), [])  # a wait without data leaves no stale data behind
    assert not path.exists() and cachefile.read(str(path)) == []


def test_interface_names():
    assert network.valid_interface("eth0") and network.valid_interface("enp0s31f6.100")
    assert not network.valid_interface("") and not network.valid_interface("a b")
    assert not network.valid_interface("../../etc") and not network.valid_interface("x" * 16)
    assert network.interface_ipv4("lo") == "127.0.0.1"
    assert network.interface_ipv4("nosuch0") is None
    assert network.interface_info("lo", device_ip="10.1.2.3")["ipv4"] == "10.1.2.3"


def test_commands_import_nothing_heavy():
    """Each lava-* call is a process: it must not pay for redis-py, Celery or asyncio."""
    import subprocess
    import sys

    code = ("import sys, convoy.coordinator.multinode.commands, convoy.coordinator.multinode.network;"
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("redis", "celery", "kombu", "asyncio", "yaml", "cerberus", "ssl", "hashlib", "typing"):
        assert f"'{heavy}'" not in loaded, f"{heavy} imported by the commands"


@pytest.mark.parametrize("prog, argv, action, fields", [
    ("lava-send", ["m", "a=1"], "send", {"message_id": "m", "data": {"a": "1"}}),
    ("lava-wait", ["--timeout", "3", "m"], "wait", {"message_id": "m", "timeout": 3.0}),
    ("lava-wait-all", ["m", "server"], "wait-all", {"role": "server"}),
    ("lava-role", ["list"], "role-list", {}),
    ("lava-network", ["collect", "--timeout=2", "eth0", "client"], "network-collect",
     {"timeout": 2.0, "iface": "eth0", "role": "client", "message_id": "network_info"}),
    ("lava-network", ["alias-hosts", "/tmp/h"], "network-hosts", {"aliases": True, "file": "/tmp/h"}),
    ("lava-network", ["query", "12", "mac"], "network-query", {"job": "12", "field": "mac"}),
])
def test_parse(prog, argv, action, fields):
    call = args.parse(prog, argv)
    assert call.action == action
    assert {k: getattr(call, k) for k in fields} == fields


def test_broadcast_needs_an_interface_unless_device_ip_is_set():
    with pytest.raises(MultiNodeUsageError, match="missing interface"):
        args.parse("lava-network", ["broadcast"])
    assert args.parse("lava-network", ["broadcast"], device_ip="10.0.0.1").iface is None
    with pytest.raises(args.Help):
        args.parse("lava-network", ["--help"])
    with pytest.raises(MultiNodeUsageError, match="unknown MultiNode command"):
        args.parse("lava-frob", [])
