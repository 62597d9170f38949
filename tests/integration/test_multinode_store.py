"""The MultiNode store in-process, on real Redis: sends, waits, barriers, failures, reconnects."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis as redis_lib
from convoy.coordinator.state import keys
from convoy.coordinator.multinode import group as mn_group
from convoy.coordinator.multinode import lua, store
from convoy.errors import BarrierTimeout, GroupMemberFailed, GroupNotFound, MultiNodeUsageError, NotGroupMember

from helpers import wait_for

pytestmark = pytest.mark.integration


class Bg:
    """Runs a call in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self, timeout: float = 10.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "call did not return in time"
        return self.result


@pytest.fixture
def gid(redis_client) -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def conns(redis_url, gid):
    made: list[redis_lib.Redis] = []

    def make() -> redis_lib.Redis:
        conn = redis_lib.Redis.from_url(redis_url, decode_responses=True, client_name=f"test:{gid}:{len(made)}")
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()


def kill_connections(client, prefix: str, spare: frozenset[str] = frozenset()) -> set[str]:
    """CLIENT KILL this test's own connections only (other tests' clients share the server)."""
    ids = {c["id"] for c in client.client_list() if c.get("name", "").startswith(prefix)} - spare
    for cid in ids:
        client.client_kill_filter(_id=cid)
    return ids


def subscribers(client, gid: str) -> int:
    return int(client.pubsub_numsub(keys.group_channel(gid))[0][1])


def make_group(client, gid: str, roles: list[str], timeout: float = 10.0) -> list[str]:
    members = {f"{gid}-{i + 1}": role for i, role in enumerate(roles)}
    mn_group.create_group(client, gid, members, timeout=timeout)
    return list(members)


def test_wait_before_send_is_woken_with_the_data(redis_client, gid, conns):
    a, _b = make_group(redis_client, gid, ["server", "client"])
    conn = conns()
    waiter = Bg(lambda: store.wait_any(conn, gid, "ready", timeout=10))
    wait_for(lambda: subscribers(redis_client, gid) == 1, what="waiter subscribed")
    store.send(conns(), gid, a, "ready", {"ip": "10.0.0.1", "msg": "a b=c"})
    assert waiter.join() == {a: {"ip": "10.0.0.1", "msg": "a b=c"}}
    assert waiter.error is None
    store.send(conn, gid, a, "other")
    assert subscribers(redis_client, gid) == 0  # the wait's subscription ended with it


def test_late_wait_returns_at_once_and_ids_persist(redis_client, gid, conns):
    a, _b = make_group(redis_client, gid, ["server", "client"])
    store.send(conns(), gid, a, "ready", {"k": "v"})
    for _ in range(3):  # a timeout far too short to wait for anything: the stored state answers
        assert store.wait_any(conns(), gid, "ready", timeout=0.001) == {a: {"k": "v"}}


def test_resend_replaces_own_data_and_senders_accumulate(redis_client, gid, conns):
    a, _b, c = make_group(redis_client, gid, ["x", "y", "y"])
    conn = conns()
    store.send(conn, gid, c, "m", {"ip": "3"})
    store.send(conn, gid, a, "m", {"ip": "1"})
    store.send(conn, gid, a, "m", {"port": "80"})
    # member order, not arrival order; the re-send replaced a's keys
    assert store.wait_any(conn, gid, "m", timeout=5) == {a: {"port": "80"}, c: {"ip": "3"}}


def test_wait_all_waits_for_every_member(redis_client, gid, conns):
    a, b, c = make_group(redis_client, gid, ["server", "client", "client"])
    waiter = Bg(lambda: store.wait_all(conns(), gid, "done", timeout=10))
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    store.send(conns(), gid, a, "done", {"n": "1"})
    store.send(conns(), gid, b, "done")
    with pytest.raises(BarrierTimeout):  # the same check the waiter makes: not all of them yet
        store.wait_all(conns(), gid, "done", timeout=0.001)
    assert waiter.thread.is_alive()
    store.send(conns(), gid, c, "done", {"n": "3"})
    assert waiter.join() == {a: {"n": "1"}, b: {}, c: {"n": "3"}}


def test_wait_all_for_a_role_returns_every_senders_data(redis_client, gid, conns):
    a, _b, c = make_group(redis_client, gid, ["server", "client", "observer"])
    store.send(conns(), gid, c, "ready", {"seen": "yes"})
    waiter = Bg(lambda: store.wait_all(conns(), gid, "ready", "server", timeout=10))
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    store.send(conns(), gid, a, "ready", {"ip": "10.0.0.1"})
    assert waiter.join() == {a: {"ip": "10.0.0.1"}, c: {"seen": "yes"}}


def test_wait_any_of_a_role_for_delayed_start(redis_client, gid, conns):
    _a, b, c = make_group(redis_client, gid, ["server", "server", "client"])
    store.send(conns(), gid, c, "lava_start")  # a client's send does not count
    waiter = Bg(lambda: store.wait_any(conns(), gid, "lava_start", role="server", timeout=10))
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    store.send(conns(), gid, b, "lava_start", {"port": "22"})
    assert waiter.join() == {b: {"port": "22"}, c: {}}
    with pytest.raises(MultiNodeUsageError):
        store.wait_any(conns(), gid, "lava_start", role="db", timeout=1)


def test_wait_all_unknown_role_is_a_usage_error(redis_client, gid, conns):
    make_group(redis_client, gid, ["server", "client"])
    with pytest.raises(MultiNodeUsageError, match="no role 'db'"):
        store.wait_all(conns(), gid, "ready", "db", timeout=5)


def test_timeout_uses_the_call_then_the_group_default(redis_client, gid, conns):
    make_group(redis_client, gid, ["a", "b"], timeout=0.3)
    with pytest.raises(BarrierTimeout) as info:
        store.wait_any(conns(), gid, "never", timeout=0.2)
    assert info.value.timeout == 0.2 and str(info.value) == "timed out after 0.2s waiting for 'never'"
    with pytest.raises(BarrierTimeout, match="after 0.3s"):
        store.wait_all(conns(), gid, "never")


def test_unknown_group_non_member_and_oversized_data(redis_client, gid, conns):
    a, = make_group(redis_client, gid, ["a"])
    with pytest.raises(MultiNodeUsageError, match="over the 65536-byte limit"):
        store.send(conns(), gid, a, "big", {"blob": "x" * 70000})
    with pytest.raises(NotGroupMember):
        store.send(conns(), gid, "intruder", "m")
    with pytest.raises(GroupNotFound):
        store.send(conns(), "no-such-group", "x", "m")
    with pytest.raises(GroupNotFound):
        store.wait_any(conns(), "no-such-group", "m", timeout=1)
    with pytest.raises(NotGroupMember):
        store.sync(conns(), gid, "intruder", "s", timeout=1)


def test_sync_reused_100_times_by_8_members(redis_client, gid, conns):
    members = make_group(redis_client, gid, ["peer"] * 8)
    rounds = 100
    progress = {m: 0 for m in members}
    errors: list[BaseException] = []

    def member(job: str) -> None:
        conn = conns()
        try:
            for i in range(rounds):
                store.sync(conn, gid, job, "step", timeout=20)
                # nobody may be more than one round ahead of anybody at a release
                assert min(progress.values()) >= i, f"{job} released early in round {i}"
                progress[job] = i + 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=member, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert not errors, errors[0]
    assert all(v == rounds for v in progress.values())
    state = redis_client.hgetall(keys.group_sync(gid, "step"))
    assert state["done"] == str(rounds)
    assert not [f for f in state if f.startswith("g:")]  # finished generations are cleaned up


def test_sync_arrival_is_idempotent_per_token(redis_client, gid, conns):
    a, b = make_group(redis_client, gid, ["x", "y"])
    ks = [keys.group_info(gid), keys.group_members(gid), keys.group_failed(gid), keys.group_sync(gid, "s"),
          keys.group_message(gid, "s"), keys.group_api_log(gid), keys.group_keys(gid), keys.group_channel(gid)]
    conn = conns()
    pending = [1, "10.0", None, [], 1]  # status 1 (pending), group timeout, -, no data, generation 1
    assert lua.SYNC_ENTER(conn, ks, [a, "s", "tok1", ""]) == pending
    assert lua.SYNC_ENTER(conn, ks, [a, "s", "tok1", ""]) == pending  # a retried call counts once
    assert lua.SYNC_ENTER(conn, ks, [b, "s", "tok2", ""]) == [2, "10.0", None, [], 1]


def test_sync_data_and_plain_waits_see_the_sync_as_a_send(redis_client, gid, conns):
    a, b = make_group(redis_client, gid, ["x", "y"])
    store.send(conns(), gid, a, "go", {"k": "v"})
    other = Bg(lambda: store.sync(conns(), gid, b, "go", timeout=10))
    got = store.sync(conns(), gid, a, "go", timeout=10)
    assert got == other.join() == {a: {"k": "v"}}  # senders with data only
    assert store.wait_all(conns(), gid, "go", timeout=1) == {a: {"k": "v"}, b: {}}


def test_fail_member_fails_pending_and_future_waits_at_once(redis_client, gid, conns):
    a, b, c = make_group(redis_client, gid, ["server", "client", "client"], timeout=60)
    waits = [Bg(lambda: store.wait_any(conns(), gid, "never")),
             Bg(lambda: store.wait_all(conns(), gid, "never", "server")),
             Bg(lambda: store.sync(conns(), gid, b, "barrier"))]
    wait_for(lambda: subscribers(redis_client, gid) == 3, what="three waiters subscribed")
    mn_group.fail_member(redis_client, gid, c, "failed: test command exited 1")
    for w in waits:
        w.join(10)  # generous: they return at once, this only bounds a hang
        assert isinstance(w.error, GroupMemberFailed)
        assert w.error.job_id == c and str(w.error) == f"group member {c} failed: test command exited 1"
    store.send(conns(), gid, a, "late", {"k": "v"})  # sends still work...
    with pytest.raises(GroupMemberFailed):  # ...but every later wait fails
        store.wait_any(conns(), gid, "late", timeout=5)
    assert mn_group.failed_members(redis_client, gid) == {c: "failed: test command exited 1"}


def test_waiter_survives_killed_connections(redis_url, redis_client, gid, conns):
    a, _b = make_group(redis_client, gid, ["x", "y"])
    name = f"waiter:{gid}"
    client = redis_lib.Redis.from_url(redis_url, client_name=name)
    waiter = Bg(lambda: store.wait_any(client, gid, "after-kill", timeout=20))
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    killed: frozenset[str] = frozenset()
    for _ in range(2):  # twice: the second kill hits the re-made connection
        killed |= wait_for(lambda: kill_connections(redis_client, name, killed), what="a live connection")
        wait_for(lambda: subscribers(redis_client, gid) == 1 and any(
            c.get("name") == name and c["id"] not in killed for c in redis_client.client_list()),
            what="waiter resubscribed")
    assert waiter.thread.is_alive()
    store.send(conns(), gid, a, "after-kill", {"ok": "1"})
    assert waiter.join() == {a: {"ok": "1"}}
    client.close()


def test_message_sent_while_waiter_is_disconnected_is_not_lost(redis_url, redis_client, gid, conns):
    a, _b = make_group(redis_client, gid, ["x", "y"])
    gap = redis_lib.Redis.from_url(redis_url, client_name=f"gap:{gid}")
    waiter = Bg(lambda: store.wait_any(gap, gid, "gap", timeout=20))
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    assert len(kill_connections(redis_client, f"gap:{gid}")) >= 1  # its subscription (and command link)
    store.send(conns(), gid, a, "gap", {"k": "v"})  # may land before the waiter is back
    assert waiter.join() == {a: {"k": "v"}}


@pytest.mark.parametrize("decode", [True, False])
def test_any_redis_py_client_works_decoding_or_not(redis_url, redis_client, gid, decode):
    """Workers hold redis-py clients of either kind: the store reads through its own byte client."""
    a, b = make_group(redis_client, gid, ["x", "y"])
    client = redis_lib.Redis.from_url(redis_url, decode_responses=decode)
    try:
        waiter = Bg(lambda: store.wait_all(client, gid, "both", timeout=10))
        wait_for(lambda: subscribers(redis_client, gid) == 1)
        store.send(client, gid, a, "both", {"k": "1"})
        other = Bg(lambda: store.sync(client, gid, b, "bar", timeout=10))
        assert store.sync(client, gid, a, "bar", timeout=10) == {}
        other.join()
        store.send(client, gid, b, "both", {"k": "2"})
        assert waiter.join() == {a: {"k": "1"}, b: {"k": "2"}}
        assert [c["name"] for c in mn_group.api_calls(client, gid)] == ["multinode-send-both"] * 2
    finally:
        client.close()


def test_a_stopped_wait_ends_promptly(redis_client, gid, conns):
    make_group(redis_client, gid, ["x", "y"], timeout=60)
    stop = threading.Event()
    waiter = Bg(lambda: store.wait_any(conns(), gid, "never", stop=lambda: "asked to" if stop.is_set() else None))
    wait_for(lambda: subscribers(redis_client, gid) == 1)
    stop.set()
    waiter.join(2)  # STOP_SLICE is 0.2 s
    assert isinstance(waiter.error, store.WaitStopped)
    assert str(waiter.error) == "stopped waiting for 'never': asked to"
    assert subscribers(redis_client, gid) == 0


def test_api_calls_and_group_lifetime(redis_client, gid, conns):
    a, b = make_group(redis_client, gid, ["server", "client"])
    store.send(conns(), gid, a, "m", {"k": "v"})
    store.record_call(conns(), gid, b, "multinode-wait-m", "pass")
    calls = mn_group.api_calls(redis_client, gid)
    assert [(c["job_id"], c["role"], c["name"], c["result"]) for c in calls] == [
        (a, "server", "multinode-send-m", "pass"), (b, "client", "multinode-wait-m", "pass")]
    assert all(isinstance(c["time"], float) for c in calls)
    assert mn_group.get_group(redis_client, gid).members == [(a, "server"), (b, "client")]

    mn_group.expire_group(redis_client, gid, 100)
    group_keys = redis_client.keys(f"convoy:group:{gid}:*")
    assert group_keys and all(0 < redis_client.ttl(k) <= 100 for k in group_keys)
    store.send(conns(), gid, b, "late")  # a key made after expiry inherits the TTL
    assert 0 < redis_client.ttl(keys.group_message(gid, "late")) <= 100

    mn_group.delete_group(redis_client, gid)
    assert redis_client.keys(f"convoy:group:{gid}:*") == []


# --- bytes-safety ------------------------------------------------------------------------------
@pytest.mark.parametrize("message_id, data, message", [
    ("m", {"k": "\udcff"}, "bad value for 'k': not valid UTF-8"),
    ("m", {"k\udcff": "v"}, "bad key"),
    ("m", {"a=b": "v"}, "bad key"),
    ("m", {"k": "two\nlines"}, "bad value for 'k': values are one line"),
    ("m", {"k": b"bytes"}, "bad value for 'k': text, not bytes"),
    ("m\udcff", {}, "bad message id"),
])
def test_send_refuses_what_another_member_could_not_read(redis_client, gid, conns, message_id, data, message):
    a, _b = make_group(redis_client, gid, ["x", "y"])
    with pytest.raises(MultiNodeUsageError, match=message):
        store.send(conns(), gid, a, message_id, data)
    assert redis_client.scard(keys.group_keys(gid)) == 0  # no message key created
    assert mn_group.api_calls(redis_client, gid) == []


@pytest.mark.parametrize("decode", [True, False])
def test_odd_bytes_in_redis_never_fail_a_reader_of_either_client(redis_url, redis_client, gid, decode):
    a, b = make_group(redis_client, gid, ["x", "y"])
    raw = redis_lib.Redis.from_url(redis_url)  # written around send, as a script could
    raw.hset(keys.group_message(gid, "odd"), mapping={a: b'{"k": "\xff", "e": "\\udcff"}', b: b"\xfe"})
    raw.close()
    client = redis_lib.Redis.from_url(redis_url, decode_responses=decode)  # the runner's kind of client
    try:
        expected = {a: {"k": "\ufffd", "e": "\ufffd"}, b: {}}
        assert store.wait_any(client, gid, "odd", timeout=5) == expected
        assert store.read_message(client, gid, "odd") == expected
    finally:
        client.close()


def test_more_waits_at_once_than_redis_pys_default_pool_holds(redis_client, gid):
    """A coordinator's one client serves every parent's and guest's waits: each holds a connection."""
    a, _b = make_group(redis_client, gid, ["x", "y"], timeout=30)
    waits = [Bg(lambda: store.wait_any(redis_client, gid, "go")) for _ in range(150)]  # redis-py: 100 by default
    wait_for(lambda: subscribers(redis_client, gid) == 150, timeout=30, what="150 waiters subscribed")
    store.send(redis_client, gid, a, "go", {"k": "v"})
    assert [w.join(30) for w in waits] == [{a: {"k": "v"}}] * 150
