"""The RESP3 codec of the commands' small Redis client, and the commands' argument checks."""
from __future__ import annotations

import time

import pytest
from convoy.coordinator.multinode import cachefile, commands, network
from convoy.coordinator.multinode.resp import (
    RespConn,
    RespError,
    _Incomplete,
    _Push,
    encode,
    parse,
)
from convoy.coordinator.state.urls import redact_url, safe_client_name
from convoy.errors import MultiNodeUsageError


def one(raw: bytes):
    value, pos = parse(bytearray(raw))
    assert pos == len(raw)
    return value


def test_encode_is_an_array_of_bulk_strings():
    assert encode(("SET", "k", 5, b"\x00")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$1\r\n\x00\r\n"
    assert encode(("ECHO", "é")) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"


@pytest.mark.parametrize("raw, value", [
    (b"+OK\r\n", "OK"),
    (b":42\r\n", 42),
    (b"$5\r\nhe\r\nl\r\n", "he\r\nl"),
    (b"$-1\r\n", None),
    (b"_\r\n", None),
    (b"*-1\r\n", None),
    (b",1.5\r\n", 1.5),
    (b"#t\r\n", True),
    (b"(123456789012345678901\r\n", 123456789012345678901),
    (b"=7\r\ntxt:abc\r\n", "abc"),
    (b"*3\r\n:1\r\n$1\r\na\r\n*1\r\n_\r\n", [1, "a", [None]]),
    (b"~1\r\n+x\r\n", ["x"]),
    (b"%1\r\n+server\r\n+redis\r\n", {"server": "redis"}),
    (b"|1\r\n+ttl\r\n:3\r\n+OK\r\n", "OK"),
])
def test_parse_resp2_and_resp3_types(raw, value):
    assert one(raw) == value


def test_errors_and_pushes_are_typed():
    err = one(b"-NOSCRIPT No matching script\r\n")
    assert isinstance(err, RespError) and str(err).startswith("NOSCRIPT")
    assert isinstance(one(b"!3\r\nERR\r\n"), RespError)
    push = one(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nm x\r\n")
    assert isinstance(push, _Push) and push == ["message", "ch", "m x"]


@pytest.mark.parametrize("raw", [b"", b"+OK", b"$5\r\nab", b"*2\r\n:1\r\n", b"%1\r\n+a\r\n"])
def test_incomplete_replies_wait_for_more_bytes(raw):
    with pytest.raises(_Incomplete):
        parse(bytearray(raw))


def test_two_replies_in_one_buffer():
    buf = bytearray(b":1\r\n+two\r\n")
    first, pos = parse(buf)
    second, end = parse(buf, pos)
    assert (first, second, end) == (1, "two", len(buf))


def test_only_redis_urls():
    with pytest.raises(ValueError):
        RespConn("http://localhost:6379")
    RespConn("redis://:secret@127.0.0.1:1/3")  # lazily connected: no error yet


@pytest.mark.parametrize("args, data", [
    ([], {}),
    (["a=1", "b=two words"], {"a": "1", "b": "two words"}),
    (["url=http://x/?a=b=c", "empty="], {"url": "http://x/?a=b=c", "empty": ""}),
    (["k=1", "k=2"], {"k": "2"}),
])
def test_key_values_split_on_the_first_equals(args, data):
    assert commands._key_values(args) == data


@pytest.mark.parametrize("arg", ["novalue", "=3", "a key=1", "k=line\nbreak"])
def test_bad_key_values_are_usage_errors(arg):
    with pytest.raises(MultiNodeUsageError):
        commands._key_values([arg])


@pytest.mark.parametrize("arg", ["k=\udcff", "k=caf\udce9 au lait"])
def test_values_that_are_not_utf8_are_refused_naming_the_key(arg):
    """``lava-send id k=$'\\xff'``: Python hands such bytes over as lone surrogates."""
    with pytest.raises(MultiNodeUsageError, match="bad value for 'k': not valid UTF-8"):
        commands._key_values([arg])


def test_utf8_text_of_any_script_is_a_value():
    assert commands._key_values(["k=caf\u00e9 \u2713 \u4e2d\t"]) == {"k": "caf\u00e9 \u2713 \u4e2d\t"}


@pytest.mark.parametrize("mid", ["", "a b", "a=b", "x" * 257, "tab\there", "\udcff", "id\x1b"])
def test_bad_message_ids(mid):
    with pytest.raises(MultiNodeUsageError):
        commands._message_id([mid])


def test_missing_message_id():
    with pytest.raises(MultiNodeUsageError, match="missing message id"):
        commands._message_id([])


@pytest.mark.parametrize("args, timeout, rest", [
    (["x"], None, ["x"]),
    (["--timeout", "2.5", "x"], 2.5, ["x"]),
    (["--timeout=3", "x", "role"], 3.0, ["x", "role"]),
    (["--", "x"], None, ["x"]),
])
def test_timeout_option_comes_before_the_message_id(args, timeout, rest):
    assert commands._options(list(args), timeout_ok=True) == (timeout, rest)


@pytest.mark.parametrize("args", [["--timeout"], ["--timeout", "0", "x"], ["--timeout=-1", "x"],
                                  ["--timeout", "soon", "x"], ["--frobnicate", "x"]])
def test_bad_options(args):
    with pytest.raises(MultiNodeUsageError):
        commands._options(list(args), timeout_ok=True)


def test_send_takes_no_timeout_option():
    with pytest.raises(MultiNodeUsageError):
        commands._options(["--timeout", "3", "x"], timeout_ok=False)


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

    code = ("import sys, convoy.coordinator.multinode.commands, convoy.coordinator.multinode.netcmd;"
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("redis", "celery", "kombu", "asyncio", "yaml", "cerberus", "ssl", "hashlib"):
        assert f"'{heavy}'" not in loaded, f"{heavy} imported by the commands"


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("rediss://convoy:p%40ss@redis.lab:6380/2", "rediss://convoy:***@redis.lab:6380/2"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_urls_in_messages_never_carry_the_password(url, shown):
    assert redact_url(url) == shown
    assert RespConn(url).safe_url == shown


def test_connection_names_are_what_redis_accepts():
    assert safe_client_name("lava-wait:g 1:caf\u00e9\udcff") == "lava-wait:g_1:caf__"


def test_a_passed_deadline_ends_a_call_before_it_touches_the_network():
    conn = RespConn("redis://127.0.0.1:1/0")
    conn.limit(time.monotonic() - 1)
    with pytest.raises(TimeoutError, match="deadline passed"):
        conn.execute_command("PING")
