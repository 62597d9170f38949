"""The installed ``lava-*`` console scripts as real processes, through their job's relay, against real Redis.

Each member's commands reach the group through a real relay serving a unix
socket (``tasks/run/relay.py``), as in a job: no command sees a Redis URL.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
from convoy.coordinator.state import keys
from convoy.coordinator.state.urls import redact_url
from convoy.coordinator.multinode import group as mn_group
from convoy.tasks.run.relay import MultiNodeRelay, RelayServer
from convoy.workers.embedded.redis_server import RedisServer, free_port

from helpers import wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


class Group:
    """A MultiNode group in Redis, a relay serving each member, and the environment of its commands."""

    def __init__(self, client, tmp: Path, roles: list[str], timeout: float = 30.0,
                 servers: list[RelayServer] | None = None, group_id: str | None = None) -> None:
        self.client, self.tmp = client, tmp
        self.id = group_id or f"g{uuid.uuid4().hex[:8]}"
        self.jobs = [f"{1000 + i}" for i in range(len(roles))]
        self.roles = dict(zip(self.jobs, roles))
        self.servers = servers if servers is not None else []
        self.sockets: dict[tuple[str, str, str | None], str] = {}
        mn_group.create_group(client, self.id, self.roles, timeout=timeout)

    def socket(self, job: str, group_id: str | None = None, role: str | None = "") -> str:
        """The socket of ``job``'s relay (another one for another group id or role, as a test needs)."""
        gid = group_id or self.id
        role = self.roles.get(job) if role == "" else role
        key = (job, gid, role)
        if key not in self.sockets:
            relay = MultiNodeRelay(self.client, group_id=gid, job_id=job, role=role, timeout=None,
                                   cancel=threading.Event())
            server = relay.serve(self.tmp / f"r{len(self.sockets)}" / "relay.sock")
            server.start()
            self.servers.append(server)
            self.sockets[key] = str(server.path)
        return self.sockets[key]

    def env(self, job: str, relay: dict | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVOY_", "DEVICE_IP"))}
        env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                   CONVOY_MULTINODE_SOCKET=self.socket(job, **(relay or {})),
                   CONVOY_GROUP_ID=self.id, CONVOY_JOB_ID=job, CONVOY_ROLE=self.roles.get(job, ""),
                   CONVOY_MULTINODE_CACHE=str(self.cache(job)),
                   CONVOY_MULTINODE_NETWORK_CACHE=str(self.tmp / f"net-{job}.txt"))
        env.update(extra)
        return env

    def cache(self, job: str) -> Path:
        return self.tmp / f"cache-{job}.txt"

    def run(self, job: str, *args: str, timeout: float = 30, relay: dict | None = None,
            **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / args[0]), *args[1:]], env=self.env(job, relay, **extra),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, job: str, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(BIN / args[0]), *args[1:]], env=self.env(job, **extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def subscribers(self) -> int:
        return int(self.client.pubsub_numsub(keys.group_channel(self.id))[0][1])


@pytest.fixture
def servers():
    made: list[RelayServer] = []
    yield made
    for server in made:
        server.stop()


@pytest.fixture
def mk(redis_client, tmp_path, servers):
    return lambda roles, **kw: Group(redis_client, tmp_path, roles, servers=servers, **kw)


def finish(proc: subprocess.Popen[str], timeout: float = 15) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_group_role_self(mk):
    g = mk(["client", "loadbalancer", "backend", "backend"])
    a = g.jobs[0]
    r = g.run(a, "lava-group")
    assert (r.returncode, r.stdout) == (0, "1000\tclient\n1001\tloadbalancer\n1002\tbackend\n1003\tbackend\n")
    assert g.run(a, "lava-group", "backend").stdout == "1002\n1003\n"
    r = g.run(a, "lava-group", "server")
    assert (r.returncode, r.stdout) == (1, "")
    assert g.run(a, "lava-role").stdout == "client\n"
    assert g.run(a, "lava-role", relay={"role": None}).stdout == "client\n"  # looked up in the group
    assert g.run(a, "lava-role", "list").stdout == "client\nloadbalancer\nbackend\n"
    assert g.run(g.jobs[2], "lava-self").stdout == "1002\n"


def test_send_then_wait_writes_key_value_lines(mk):
    g = mk(["server", "client"])
    server, client = g.jobs
    r = g.run(server, "lava-send", "server-ready", "ip=10.0.0.1", "msg=free space: 3 GB", "url=a=b")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = g.run(client, "lava-wait", "server-ready")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert g.cache(client).read_text() == "ip=10.0.0.1\nmsg=free space: 3 GB\nurl=a=b\n"
    # LAVA's documented idiom works unchanged
    out = subprocess.run(["sh", "-c", 'cut -d = -f 2 "$CONVOY_MULTINODE_CACHE" | head -n1'],
                         env=g.env(client), capture_output=True, text=True, check=False).stdout
    assert out == "10.0.0.1\n"


def test_wait_before_send_and_wait_all_with_role(mk):
    g = mk(["server", "client", "client"])
    server, c1, c2 = g.jobs
    w1 = g.start(c1, "lava-wait", "ready")
    w2 = g.start(c2, "lava-wait-all", "ready", "server")
    wait_for(lambda: g.subscribers() == 2, what="both waiters subscribed")
    assert w1.poll() is None and w2.poll() is None
    assert g.run(server, "lava-send", "ready", "ip=10.0.0.9").returncode == 0
    assert finish(w1) == (0, "", "")
    assert finish(w2) == (0, "", "")
    assert g.cache(c1).read_text() == "ip=10.0.0.9\n"
    assert g.cache(c2).read_text() == f"{server}:ip=10.0.0.9\n"


def test_wait_all_collects_every_sender(mk):
    g = mk(["peer", "peer", "peer"])
    a, b, c = g.jobs
    waiter = g.start(a, "lava-wait-all", "--timeout", "20", "done")
    wait_for(lambda: g.subscribers() == 1)
    for job, extra in ((c, ["n=3"]), (b, []), (a, ["n=1", "note=x y"])):
        assert g.run(job, "lava-send", "done", *extra).returncode == 0
    assert finish(waiter)[0] == 0
    assert g.cache(a).read_text() == f"{a}:n=1\n{a}:note=x y\n{c}:n=3\n"


def test_sync_loop_with_real_processes(mk):
    g = mk(["peer"] * 4)
    loop = 'for i in 1 2 3 4 5 6 7 8; do lava-sync step || exit 1; done'
    procs = [subprocess.Popen(["sh", "-c", loop], env=g.env(job), stderr=subprocess.PIPE, text=True)
             for job in g.jobs]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read() if p.stderr else ""
    assert g.client.hget(keys.group_sync(g.id, "step"), "done") == "8"
    calls = mn_group.api_calls(g.client, g.id)
    assert len(calls) == 32 and {c["name"] for c in calls} == {"multinode-sync-step"}
    assert {c["result"] for c in calls} == {"pass"}


def test_timeout_fails_clearly(mk):
    g = mk(["server", "client"], timeout=0.5)
    r = g.run(g.jobs[1], "lava-wait", "--timeout", "0.3", "server-ready")
    assert r.returncode == 1
    assert r.stderr == "lava-wait: timed out after 0.3s waiting for 'server-ready'\n"
    r = g.run(g.jobs[1], "lava-sync", "alone")  # the group's own timeout (0.5 s)
    assert (r.returncode, r.stderr) == (1, "lava-sync: timed out after 0.5s waiting for 'alone'\n")
    r = g.run(g.jobs[1], "lava-wait-all", "x", CONVOY_MULTINODE_TIMEOUT="0.2")
    assert (r.returncode, r.stderr) == (1, "lava-wait-all: timed out after 0.2s waiting for 'x'\n")
    fails = [c for c in mn_group.api_calls(g.client, g.id) if c["result"] == "fail"]
    assert [c["name"] for c in fails] == ["multinode-wait-server-ready", "multinode-sync-alone",
                                          "multinode-wait-all-x"]
    assert "timed out" in fails[0]["detail"]


def test_failed_member_fails_every_waiter_at_once(mk):
    g = mk(["server", "client", "client", "observer"], timeout=120)
    server, c1, c2, obs = g.jobs
    waiters = [g.start(c1, "lava-wait", "server-ready"), g.start(c2, "lava-sync", "start"),
               g.start(obs, "lava-wait-all", "ready", "server")]
    wait_for(lambda: g.subscribers() == 3, what="three waiters subscribed")
    mn_group.fail_member(g.client, g.id, server, "was cancelled")
    for proc in waiters:
        code, _, err = finish(proc, timeout=15)  # bounds a hang; they return at once
        assert code == 1
        assert f"group member {server} was cancelled" in err
    r = g.run(c1, "lava-wait", "anything")  # later waits fail too
    assert r.returncode == 1 and f"group member {server} was cancelled" in r.stderr


def test_waiter_reconnects_after_its_connection_is_killed(mk):
    g = mk(["server", "client"])
    server, client = g.jobs
    waiter = g.start(client, "lava-wait", "--timeout", "30", "after-kill")
    wait_for(lambda: g.subscribers() == 1)

    def ids() -> set[str]:  # the relays' connections (the store's own client names them)
        return {c["id"] for c in g.client.client_list() if c.get("name") == "convoy:multinode"}

    killed: set[str] = set()
    for _ in range(2):  # twice: the second kill hits the re-made connection
        current = wait_for(lambda: ids() - killed, what="a new waiter connection")
        for cid in current:
            g.client.client_kill_filter(_id=cid)
        killed |= current
        wait_for(lambda: ids() - killed and g.subscribers() == 1, what="waiter resubscribed")
    assert waiter.poll() is None
    assert g.run(server, "lava-send", "after-kill", "k=v").returncode == 0
    assert finish(waiter) == (0, "", "")
    assert g.cache(client).read_text() == "k=v\n"


def test_redis_gone_until_the_deadline_fails_clearly(tmp_path, servers):
    server = RedisServer(tmp_path / "redis").start()
    client = redis_lib.Redis.from_url(server.url, decode_responses=True)
    try:
        g = Group(client, tmp_path, ["a", "b"], servers=servers, group_id="gone")
        waiter = g.start(g.jobs[1], "lava-wait", "--timeout", "4", "never")
        wait_for(lambda: g.subscribers() == 1)
        server.stop()
        code, _, err = finish(waiter, timeout=20)
        assert code == 1
        assert err.startswith(f"lava-wait: cannot reach {redact_url(server.url)}"), err
        assert "gave up waiting for 'never' after 4s" in err and "Traceback" not in err
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize("args, message", [
    (["lava-send"], "missing message id"),
    (["lava-send", "id", "novalue"], "bad key=value argument 'novalue'"),
    (["lava-send", "id", "bad key=1"], "bad key=value argument"),
    (["lava-send", "a=b"], "bad message id"),
    (["lava-wait"], "missing message id"),
    (["lava-wait", "a", "b"], "unexpected argument 'b'"),
    (["lava-wait", "--timeout", "x", "id"], "--timeout must be a positive number"),
    (["lava-wait", "--bogus", "id"], "unknown option '--bogus'"),
    (["lava-wait-all"], "missing message id"),
    (["lava-wait-all", "id", "nosuchrole"], "no role 'nosuchrole' in this group"),
    (["lava-sync", "a", "b"], "unexpected argument 'b'"),
    (["lava-role", "lists"], "unknown argument 'lists'"),
    (["lava-self", "x"], "unexpected argument 'x'"),
    (["lava-group", "a", "b"], "unexpected argument 'b'"),
    (["lava-echo-ipv4"], "missing interface"),
    (["lava-echo-ipv4", "../x"], "bad interface name"),
    (["lava-network"], "usage: lava-network"),
    (["lava-network", "frob"], "unknown sub-command 'frob'"),
    (["lava-network", "query"], "query needs a job id"),
])
def test_malformed_calls_exit_2_with_usage(mk, args, message):
    g = mk(["server", "client"])
    r = g.run(g.jobs[0], *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "usage: " + args[0] in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_outside_a_group(mk, tmp_path):
    g = mk(["a"])
    r = g.run(g.jobs[0], "lava-send", "x", relay={"group_id": "nosuch"})
    assert (r.returncode, r.stderr) == (1, "lava-send: no MultiNode group 'nosuch' (never created, or expired)\n")
    r = g.run("999", "lava-send", "x")
    assert r.returncode == 1 and "not a member" in r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVOY_")}
    r = subprocess.run([str(BIN / "lava-wait"), "x"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert (r.returncode, r.stderr) == (1, "lava-wait: cannot reach this job's convoy worker (CONVOY_MULTINODE_SOCKET "
                                           "not set: MultiNode commands run inside a convoy MultiNode test job)\n")
    r = g.run(g.jobs[0], "lava-wait", "x", CONVOY_MULTINODE_SOCKET=str(tmp_path / "none.sock"))
    assert r.returncode == 1
    assert r.stderr == (f"lava-wait: cannot reach this job's convoy worker (CONVOY_MULTINODE_SOCKET="
                        f"{tmp_path / 'none.sock'}): No such file or directory\n")
    assert g.run(g.jobs[0], "lava-send", "--help").stdout.startswith("usage: lava-send")


def test_echo_ipv4_and_network(mk):
    g = mk(["server", "client"])
    server, client = g.jobs
    assert g.run(server, "lava-echo-ipv4", "lo").stdout == "127.0.0.1\n"
    assert g.run(server, "lava-echo-ipv4", "eth0", DEVICE_IP="10.9.8.7").stdout == "10.9.8.7\n"
    r = g.run(server, "lava-echo-ipv4", "nosuch0")
    assert r.returncode == 1 and "no IPv4 address on interface 'nosuch0'" in r.stderr

    collector = g.start(client, "lava-network", "collect", "lo")
    wait_for(lambda: g.subscribers() == 1)
    assert g.run(server, "lava-network", "broadcast", "lo").returncode == 0
    assert collector.poll() is None  # collect waits for every member's broadcast
    assert g.run(client, "lava-network", "broadcast", DEVICE_IP="10.0.0.2").returncode == 0
    assert finish(collector) == (0, "", "")
    lines = (g.tmp / f"net-{client}.txt").read_text().splitlines()
    assert f"{server}:ipv4=127.0.0.1" in lines and f"{client}:ipv4=10.0.0.2" in lines
    assert f"{server}:netmask=255.0.0.0" in lines
    assert g.run(client, "lava-network", "query", server).stdout == "127.0.0.1\n"
    assert g.run(client, "lava-network", "query", server, "netmask").stdout == "255.0.0.0\n"
    assert g.run(client, "lava-network", "hosts").stdout == f"127.0.0.1\t{server}\n10.0.0.2\t{client}\n"
    assert g.run(client, "lava-network", "alias-hosts").stdout == (
        f"127.0.0.1\t{server}\tserver01\n10.0.0.2\t{client}\tclient01\n")
    r = g.run(client, "lava-network", "query", "4242")
    assert r.returncode == 1 and "no network data from '4242'" in r.stderr


# --- Redis down, unreachable, restarted -------------------------------------------------------
@pytest.mark.parametrize("args, extra, gave_up", [
    (["lava-wait", "--timeout", "1.5", "x"], {}, "gave up waiting for 'x' after 1.5s"),
    (["lava-wait-all", "x"], {"CONVOY_MULTINODE_TIMEOUT": "1.5"}, "gave up waiting for 'x' after 1.5s"),
    (["lava-sync", "--timeout", "1.5", "x"], {}, "gave up syncing on 'x' after 1.5s"),
    (["lava-send", "x", "k=v"], {"CONVOY_MULTINODE_TIMEOUT": "1.5"}, "gave up sending 'x'"),
    (["lava-group"], {"CONVOY_MULTINODE_TIMEOUT": "1.5"}, ""),
])
def test_redis_refusing_fails_at_the_commands_own_timeout_without_the_password(args, extra, gave_up, tmp_path,
                                                                               servers):
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    relay = MultiNodeRelay(redis_lib.Redis.from_url(url), group_id="g-down", job_id="1", role="a", timeout=None,
                           cancel=None)
    server = relay.serve(tmp_path / "relay" / "relay.sock")
    server.start()
    servers.append(server)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVOY_", "DEVICE_IP"))}
    env.update(CONVOY_MULTINODE_SOCKET=str(server.path), **extra)
    r = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=60,
                       check=False)  # bounds a hang only
    assert r.returncode == 1
    assert r.stderr.startswith(f"{args[0]}: cannot reach {url.replace('s3cret', '***')}: "), r.stderr
    assert "Connection refused" in r.stderr and gave_up in r.stderr
    assert "s3cret" not in r.stderr and "Traceback" not in r.stderr


def test_a_waiter_rides_out_a_redis_restart(tmp_path, servers):
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    client = redis_lib.Redis.from_url(server.url, decode_responses=True)
    try:
        g = Group(client, tmp_path, ["server", "client"], timeout=120, servers=servers)
        sender, waiter_job = g.jobs
        waiter = g.start(waiter_job, "lava-wait", "after-restart")
        wait_for(lambda: g.subscribers() == 1, what="waiter subscribed")
        server = server.restart()
        assert waiter.poll() is None, waiter.communicate()  # Redis gone: still waiting, not failed
        wait_for(lambda: g.subscribers() == 1, timeout=30, what="waiter back on the restarted Redis")
        assert g.run(sender, "lava-send", "after-restart", "k=v").returncode == 0
        assert finish(waiter) == (0, "", "")
        assert g.cache(waiter_job).read_text() == "k=v\n"
    finally:
        client.close()
        server.stop()


# --- bytes-safety ------------------------------------------------------------------------------
# "\udcff" in an argument reaches the command as the byte 0xff (os.fsencode), as $'\xff' in a shell


def test_a_non_utf8_value_is_refused_at_send_naming_the_key_and_other_waits_go_on(mk):
    g = mk(["a", "b", "c"])
    a, b, c = g.jobs
    waiter = g.start(c, "lava-wait", "data")
    wait_for(lambda: g.subscribers() == 1)
    r = g.run(a, "lava-send", "data", "ok=1", "k=\udcff")
    assert r.returncode == 2
    assert "lava-send: bad value for 'k': not valid UTF-8" in r.stderr and "usage: lava-send" in r.stderr
    assert not g.client.exists(keys.group_message(g.id, "data"))  # nothing of the bad call stored
    assert waiter.poll() is None
    assert g.run(b, "lava-send", "data", "text=h\u00e9llo \u2713 a=b").returncode == 0
    assert finish(waiter) == (0, "", "")
    assert g.cache(c).read_bytes() == "text=h\u00e9llo \u2713 a=b\n".encode()  # valid UTF-8 is carried exactly


@pytest.mark.parametrize("args, message", [
    (["lava-send", "id\udcff"], "bad message id"),
    (["lava-send", "id", "k\udcff=1"], "bad key=value argument"),
    (["lava-wait", "\udcffid"], "bad message id"),
    (["lava-wait-all", "id", "role\udcfe"], "bad role"),
    (["lava-sync", "id\udcc3"], "bad message id"),
    (["lava-network", "collect", "lo", "r\udcff"], "bad role"),
])
def test_odd_bytes_in_ids_keys_and_roles_are_usage_errors(mk, args, message):
    g = mk(["server", "client"])
    r = g.run(g.jobs[0], *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "usage: " + args[0] in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert mn_group.api_calls(g.client, g.id) == []  # refused before anything reached the group


def test_bytes_written_around_send_never_break_another_members_wait(mk, redis_url):
    g = mk(["a", "b", "c", "d"])
    a, b, c, d = g.jobs
    raw = redis_lib.Redis.from_url(redis_url)  # as a script with redis-cli could: no send, no checks
    try:
        raw.hset(keys.group_message(g.id, "odd"), mapping={
            a: b'{"bad": "\xff\xfe", "escaped": "\\udcff", "fine": "x"}',
            b: b"\xff not json",
            c: b'["not", "an", "object"]'})
    finally:
        raw.close()
    r = g.run(d, "lava-wait", "odd")
    assert (r.returncode, r.stderr) == (0, "")
    assert g.cache(d).read_text() == "bad=\ufffd\ufffd\nescaped=\ufffd\nfine=x\n"
    r = g.run(d, "lava-wait-all", "odd", "a")
    assert (r.returncode, r.stderr) == (0, "")
    assert g.cache(d).read_text() == f"{a}:bad=\ufffd\ufffd\n{a}:escaped=\ufffd\n{a}:fine=x\n"
