"""A job's MultiNode relay on real Redis: called directly (as the device's test shell does) and over its socket."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from convoy.coordinator.multinode import group as mn_group
from convoy.coordinator.state import keys
from convoy.tasks.run.relay import MAX_REQUEST, MultiNodeRelay, RelayReply, RelayServer
from helpers import wait_for

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def relays(client, roles: list[str], timeout: float = 30.0) -> tuple[str, list[MultiNodeRelay]]:
    gid = f"g{uuid.uuid4().hex[:8]}"
    jobs = {f"{gid}-{i}": role for i, role in enumerate(roles)}
    mn_group.create_group(client, gid, jobs, timeout=timeout)
    return gid, [MultiNodeRelay(client, group_id=gid, job_id=j, role=r, timeout=None, cancel=threading.Event())
                 for j, r in jobs.items()]


def subscribers(client, gid: str) -> int:
    return int(client.pubsub_numsub(keys.group_channel(gid))[0][1])


class Call(threading.Thread):
    def __init__(self, relay: MultiNodeRelay, prog: str, *argv: str, **kw) -> None:
        super().__init__(daemon=True)
        self.relay, self.prog, self.argv, self.kw = relay, prog, list(argv), kw
        self.reply: RelayReply | None = None
        self.start()

    def run(self) -> None:
        self.reply = self.relay.call(self.prog, self.argv, **self.kw)

    def result(self, timeout: float = 10.0) -> RelayReply:
        self.join(timeout)
        assert self.reply is not None, f"{self.prog} did not return in time"
        return self.reply


def test_calls_give_exit_codes_output_and_cache_lines(redis_client):
    gid, (server, client) = relays(redis_client, ["server", "client"])
    waiting = Call(client, "lava-wait", "ready")
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    assert server.call("lava-send", ["ready", "ip=10.0.0.1", "msg=a b=c"]) == RelayReply(0)
    assert waiting.result() == RelayReply(0, cache=["ip=10.0.0.1", "msg=a b=c"])
    assert client.call("lava-wait-all", ["ready", "server"]).cache == [f"{server.job_id}:ip=10.0.0.1",
                                                                        f"{server.job_id}:msg=a b=c"]
    assert client.call("lava-role", []).stdout == "client\n"
    assert client.call("lava-self", []).stdout == f"{client.job_id}\n"
    assert client.call("lava-group", ["server"]) == RelayReply(0, stdout=f"{server.job_id}\n")
    assert client.call("lava-group", ["db"]).code == 1
    assert client.call("lava-echo-ipv4", ["eth0"], device_ip="10.9.9.9").stdout == "10.9.9.9\n"
    assert client.call("lava-echo-ipv4", ["eth0"], interfaces={"eth0": {"ipv4": "10.1.1.1"}}).stdout == "10.1.1.1\n"
    assert client.call("lava-send", ["--help"]) == RelayReply(0, stdout="usage: lava-send <message-id> "
                                                                        "[key1=val1 [key2=val2] ...]\n")
    bad = client.call("lava-wait", ["a", "b"])
    assert (bad.code, bad.stderr) == (2, "lava-wait: unexpected argument 'b'\nusage: lava-wait [--timeout SECONDS] "
                                         "<message-id>\n")
    assert client.call("lava-frob", []).code == 2
    timed = client.call("lava-sync", ["--timeout", "0.2", "alone"])
    assert (timed.code, timed.stderr) == (1, "lava-sync: timed out after 0.2s waiting for 'alone'\n")
    calls = [(c["job_id"], c["name"], c["result"]) for c in mn_group.api_calls(redis_client, gid)]
    assert calls == [(server.job_id, "multinode-send-ready", "pass"), (client.job_id, "multinode-wait-ready", "pass"),
                     (client.job_id, "multinode-wait-all-ready", "pass"),
                     (client.job_id, "multinode-sync-alone", "fail")]


def test_network_calls_take_the_callers_facts(redis_client):
    _, (a, b) = relays(redis_client, ["server", "client"])
    assert a.call("lava-network", ["broadcast", "eth0"], interfaces={"eth0": {"ipv4": "10.0.0.1",
                                                                              "netmask": "255.0.0.0"}}).code == 0
    assert b.call("lava-network", ["broadcast"], device_ip="10.0.0.2").code == 0
    assert b.call("lava-network", ["collect"]).network_cache == [
        f"{a.job_id}:ipv4=10.0.0.1", f"{a.job_id}:netmask=255.0.0.0", f"{b.job_id}:ipv4=10.0.0.2"]
    assert b.call("lava-network", ["query", a.job_id, "netmask"]).stdout == "255.0.0.0\n"
    assert b.call("lava-network", ["alias-hosts", "/etc/hosts"]) == RelayReply(
        0, append_file="/etc/hosts",
        append_lines=[f"10.0.0.1\t{a.job_id}\tserver01", f"10.0.0.2\t{b.job_id}\tclient01"])
    r = a.call("lava-network", ["broadcast", "eth1"], interfaces={"eth0": {"ipv4": "10.0.0.1"}})
    assert (r.code, r.stderr) == (1, "lava-network: no IPv4 address on interface 'eth1'\n")


def test_many_calls_at_once_on_one_relay_and_a_sync_loop(redis_client):
    gid, members = relays(redis_client, ["peer"] * 4)
    waits = [Call(members[0], "lava-wait", f"m{i}") for i in range(8)]  # one relay, eight calls blocked at once
    wait_for(lambda: subscribers(redis_client, gid) == 8)
    for i in range(8):
        assert members[1].call("lava-send", [f"m{i}", f"i={i}"]).code == 0
    assert [w.result().cache for w in waits] == [[f"i={i}"] for i in range(8)]

    def loop(relay: MultiNodeRelay) -> list[int]:
        return [relay.call("lava-sync", ["step"]).code for _ in range(10)]

    results: dict[str, list[int]] = {}
    threads = [threading.Thread(target=lambda m=m: results.__setitem__(m.job_id, loop(m))) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(codes == [0] * 10 for codes in results.values()) and len(results) == 4


def test_a_cancel_ends_a_blocked_wait_promptly_with_exit_1(redis_client):
    gid, (a, _b) = relays(redis_client, ["x", "y"], timeout=600)
    waiting = Call(a, "lava-wait-all", "never")
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    started = time.monotonic()
    assert a.cancel is not None
    a.cancel.set()
    reply = waiting.result(5)
    assert time.monotonic() - started < 2
    assert (reply.code, reply.stderr) == (
        1, "lava-wait-all: stopped waiting for 'never': the job's test was stopped\n")
    assert mn_group.api_calls(redis_client, gid)[-1]["result"] == "fail"


# --- the socket -------------------------------------------------------------------------------
@pytest.fixture
def served(redis_client, tmp_path):
    made: list[RelayServer] = []

    def serve(relay: MultiNodeRelay, path: Path | None = None) -> RelayServer:
        server = relay.serve(path or tmp_path / f"job{len(made)}" / ".multinode" / "relay.sock")
        server.start()
        made.append(server)
        return server

    yield serve
    for server in made:
        server.stop()


def ask(path: Path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)


def test_the_socket_is_private_and_a_long_job_path_gets_a_short_one(redis_client, served, tmp_path):
    _, (a, _b) = relays(redis_client, ["x", "y"])
    server = served(a)
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700
    long_dir = tmp_path / ("d" * 120)
    other = served(a, long_dir / "relay.sock")
    assert len(str(other.path)) < 108 and stat.S_IMODE(other.path.parent.stat().st_mode) == 0o700
    assert ask(other.path, b'{"prog": "lava-self", "argv": []}\n')["stdout"] == f"{a.job_id}\n"
    other.stop()
    assert not other.path.exists()


@pytest.mark.parametrize("payload, message", [
    (b"\xff\xfe not json\n", "not JSON"),
    (b"[1, 2]\n", "not a JSON object"),
    (b'{"argv": []}\n', "'prog' must be a command name"),
    (b'{"prog": "lava-send", "argv": "x"}\n', "'argv' must be a list of strings"),
    (b'{"prog": "lava-send", "argv": [1]}\n', "'argv' must be a list of strings"),
    (b'{"prog": "lava-wait", "argv": ["x"], "timeout": -1}\n', "'timeout' must be a positive number"),
    (b'{"prog": "lava-network", "argv": ["broadcast"], "interfaces": {"eth0": 3}}\n', "'interfaces' must map"),
    (b'{"prog": "lava-self"', "over 262144 bytes or not one line"),  # the client hung up mid-line
    (b"x" * (MAX_REQUEST + 10) + b"\n", "over 262144 bytes"),
])
def test_malformed_requests_get_exit_2_and_the_server_goes_on(redis_client, served, payload, message):
    _, (a, _b) = relays(redis_client, ["x", "y"])
    server = served(a)
    reply = ask(server.path, payload)
    assert reply["code"] == 2 and message in reply["stderr"], reply
    assert ask(server.path, b'{"prog": "lava-self", "argv": []}\n')["stdout"] == f"{a.job_id}\n"


def test_a_killed_command_ends_its_wait_in_the_relay(redis_client, served):
    gid, (a, _b) = relays(redis_client, ["x", "y"], timeout=600)
    server = served(a)
    env = {**os.environ, "CONVOY_MULTINODE_SOCKET": str(server.path)}
    proc = subprocess.Popen([str(BIN / "lava-wait"), "never"], env=env)
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    proc.kill()
    proc.wait()
    wait_for(lambda: subscribers(redis_client, gid) == 0, what="the relay's wait ended with its caller")
    assert mn_group.api_calls(redis_client, gid)[-1]["detail"] == \
        "stopped waiting for 'never': the command that asked has gone"


def test_a_wait_whose_worker_goes_exits_1(redis_client, served, tmp_path):
    gid, (a, _b) = relays(redis_client, ["x", "y"], timeout=600)
    server = served(a)
    env = {**os.environ, "CONVOY_MULTINODE_SOCKET": str(server.path)}
    proc = subprocess.Popen([str(BIN / "lava-wait"), "never"], env=env, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    server.stop()  # the test phase ended around it
    _, err = proc.communicate(timeout=10)
    assert (proc.returncode, err) == (1, "lava-wait: stopped waiting for 'never': the job's test has ended\n")

    # a worker that dies without answering (the kernel closes its end)
    path = tmp_path / "dying.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        proc = subprocess.Popen([str(BIN / "lava-wait"), "x"], env={**env, "CONVOY_MULTINODE_SOCKET": str(path)},
                                stderr=subprocess.PIPE, text=True)
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert err == ("lava-wait: lost the connection to this job's convoy worker before it answered "
                   "(the worker stopped or restarted)\n")
