"""The MultiNode message store and its waits: send, wait, wait-all, sync (redis-py).

State lives in Redis (see ``lua/*.lua`` for the scripts); the group's pub/sub
channel only wakes waiters.  A wait subscribes (and waits for Redis to confirm
it), then reads the state, then blocks on the subscription and re-reads on
every relevant wake-up until the state satisfies it, a member fails, the
caller stops it (``stop``) or the deadline passes.  A silent ``WAKE_SLICE``
ends in a re-read too, so a wake-up lost with a connection costs at most that.
A dropped or refused connection is reopened, re-subscribed and re-read until
the call's own deadline, then the call fails with ``ServiceUnavailable``
(naming Redis without its password).

Values are bytes-safe: what is stored is JSON of text that encodes as UTF-8
(``args.check_data`` refuses anything else at send, naming the key), and what
is read is made valid text whatever is in Redis, so one member's odd bytes can
never break another member's wait.

Every function takes the caller's ``redis.Redis``; the store talks through a
sibling client to the same Redis that returns bytes (decoded here with
replacement, whatever the caller's ``decode_responses``) and leaves reconnects
to this module's loop (see :func:`raw`).  Only workers and coordinators use
it: the ``lava-*`` commands reach it through their job's relay
(``tasks/run/relay.py``).
"""
from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import redis
from redis.retry import Retry
from redis.backoff import NoBackoff

from convoy.coordinator.multinode import lua
from convoy.coordinator.multinode.args import (MAX_DATA, MAX_MESSAGE_ID, check_data, check_message_id,
                                               check_role, is_utf8)
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import (CONNECT_TIMEOUT_SECONDS, SOCKET_TIMEOUT_SECONDS, client_url)
from convoy.coordinator.state.urls import redact_url
from convoy.errors import (
    BarrierTimeout,
    ConvoyError,
    GroupMemberFailed,
    GroupNotFound,
    MultiNodeUsageError,
    NotGroupMember,
    ServiceUnavailable,
)

__all__ = ["CONNECT_BUDGET", "MAX_DATA", "MAX_MESSAGE_ID", "Group", "Received", "WaitStopped", "check_data",
           "check_message_id", "check_role", "load_group", "raw", "read_message", "record_call", "retrying",
           "send", "sync", "wait_all", "wait_any"]

#: how long a call keeps reconnecting before the group's own timeout is known
CONNECT_BUDGET = 30.0
#: the longest a wait blocks on its subscription before it re-reads the state
WAKE_SLICE = 10.0
#: how often a wait that can be stopped (``stop``) asks whether it should
STOP_SLICE = 0.5
#: connections of the store's own client: each blocked wait holds one (redis-py's default is 100)
MAX_CONNECTIONS = 10_000

Received = dict[str, dict[str, str]]
"""Message data by sender job id, in the group's member order."""
Stop = Callable[[], "str | None"]


class WaitStopped(ConvoyError):
    """The caller stopped a wait (its test was stopped, or whoever asked has gone)."""

    def __init__(self, message_id: str, why: str) -> None:
        self.message_id = message_id
        super().__init__(f"stopped waiting for {message_id!r}: {why}")


# --- the store's own client -------------------------------------------------
_RAW: weakref.WeakKeyDictionary[redis.Redis, redis.Redis] = weakref.WeakKeyDictionary()
_RAW_LOCK = threading.Lock()


def raw(client: redis.Redis) -> redis.Redis:
    """A client to ``client``'s Redis that returns bytes and does not retry on its own (one per client).

    Bytes: a decoding client raises on bytes that are not UTF-8, which a
    script writing around ``send`` may have stored; here they are replaced.
    No retries: this module's loop retries until the call's own deadline.
    Its connections carry ``client``'s name (else ``convoy:multinode``)."""
    with _RAW_LOCK:
        made = _RAW.get(client)
        if made is None:
            name = client.connection_pool.connection_kwargs.get("client_name") or "convoy:multinode"
            made = redis.Redis.from_url(
                client_url(client), decode_responses=False, client_name=name,
                socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_keepalive=True, retry=Retry(NoBackoff(), 0), max_connections=MAX_CONNECTIONS)
            _RAW[client] = made
        return made


def safe_url(client: redis.Redis) -> str:
    return redact_url(client_url(client))


def _s(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _text(value: Any) -> str:
    """``value`` as text that always encodes as UTF-8 (lone surrogates become U+FFFD)."""
    text = _s(value)
    if is_utf8(text):
        return text
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


def _pairs(flat: Any) -> dict[str, str]:
    flat = flat or []
    if isinstance(flat, dict):
        return {_text(k): _text(v) for k, v in flat.items()}
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


def is_connection_error(exc: BaseException) -> bool:
    """True for a lost or refused connection."""
    return isinstance(exc, CONNECTION_ERRORS)


class Backoff:
    """Pauses between reconnection attempts: 0.05 s doubling to 1 s, never past the deadline."""

    def __init__(self) -> None:
        self.delay = 0.05

    def reset(self) -> None:
        self.delay = 0.05

    def pause(self, deadline: float, stop: Stop | None = None) -> None:
        end = time.monotonic() + max(0.0, min(self.delay, deadline - time.monotonic()))
        while True:
            left = end - time.monotonic()
            if left <= 0 or (stop is not None and stop()):
                break
            time.sleep(min(left, STOP_SLICE))
        self.delay = min(self.delay * 2, 1.0)


def retrying(client: redis.Redis, call: Callable[[], Any], deadline: float, what: str = "") -> Any:
    """Run ``call``, again after connection errors (with back-off) until ``deadline``, then ``ServiceUnavailable``."""
    backoff = Backoff()
    while True:
        try:
            return call()
        except CONNECTION_ERRORS as exc:
            if deadline - time.monotonic() <= 0:
                raise ServiceUnavailable(safe_url(client), f"{_reason(exc)}{what}") from exc
            backoff.pause(deadline)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# --- reading the group -----------------------------------------------------
class Group:
    """What a member needs to know about its group: members in order, default timeout."""

    def __init__(self, group_id: str, members: list[tuple[str, str]], timeout: float) -> None:
        self.group_id = group_id
        self.members = members
        self.timeout = timeout

    def roles(self) -> list[str]:
        """Distinct roles, in order of first appearance."""
        return list(dict.fromkeys(role for _, role in self.members))

    def role_of(self, job_id: str) -> str | None:
        return next((role for job, role in self.members if job == job_id), None)


def _deadline(deadline: float | None) -> float:
    return time.monotonic() + CONNECT_BUDGET if deadline is None else deadline


def load_group(client: redis.Redis, group_id: str, *, deadline: float | None = None) -> Group:
    """The group's members (in job order) and timeout; ``GroupNotFound`` if absent."""
    c = raw(client)
    reply = retrying(client, lambda: c.hmget(keys.group_info(group_id), "members", "timeout"), _deadline(deadline))
    if not reply or reply[0] is None:
        raise GroupNotFound(group_id)
    members = [(_text(j), _text(r)) for j, r in json.loads(_s(reply[0]))]
    return Group(group_id, members, float(_s(reply[1] or 600)))


def read_message(client: redis.Redis, group_id: str, message_id: str, *,
                 deadline: float | None = None) -> Received:
    """What has been sent for ``message_id`` so far, without waiting."""
    deadline = _deadline(deadline)
    group = load_group(client, group_id, deadline=deadline)
    c = raw(client)
    data = retrying(client, lambda: c.hgetall(keys.group_message(group_id, message_id)), deadline)
    return _ordered(json.dumps(group.members), {_s(k): _s(v) for k, v in (data or {}).items()})


def _ordered(members_json: Any, data: Mapping[str, str]) -> Received:
    order = [job for job, _ in json.loads(_s(members_json))] if members_json else []
    senders = [j for j in order if j in data] + sorted(j for j in data if j not in order)
    return {_text(job): _received(data[job]) for job in senders}


def _received(stored: Any) -> dict[str, str]:
    """One sender's stored data as text, whatever is in Redis (never an error for the reader).

    ``send`` stores a JSON object of UTF-8 text; anything else (written
    around ``send``) is read as no data, and undecodable text is replaced."""
    try:
        data = json.loads(_s(stored))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {_text(k): _text(v) for k, v in data.items() if isinstance(v, (str, int, float))}


# --- send ------------------------------------------------------------------
def call_record(job_id: str, name: str, result: str, detail: str | None = None) -> str:
    """JSON of one API-call record (the script adds the member's role)."""
    record: dict[str, Any] = {"job_id": job_id, "name": name, "result": result, "time": time.time()}
    if detail:
        record["detail"] = detail
    return json.dumps(record)


def send(client: redis.Redis, group_id: str, job_id: str, message_id: str,
         data: Mapping[str, str] | None = None, *, record: bool = True,
         deadline: float | None = None) -> None:
    """Store ``job_id``'s data for ``message_id`` (replacing its earlier data) and wake waiters.

    Refuses (``MultiNodeUsageError``, naming the key) data that another member
    could not read back as text, before anything is stored."""
    check_message_id(message_id)
    data = check_data(data or {})
    g = group_id
    keys_ = [keys.group_info(g), keys.group_members(g), keys.group_message(g, message_id),
             keys.group_keys(g), keys.group_api_log(g), keys.group_channel(g), keys.group_sync(g, message_id)]
    payload = json.dumps(data)
    if len(payload) > MAX_DATA:
        raise MultiNodeUsageError(f"message data of {len(payload)} bytes is over the {MAX_DATA}-byte limit: "
                                  "the MultiNode API is for small messages, transfer files yourself")
    rec = call_record(job_id, f"multinode-send-{message_id}", "pass") if record else ""
    c = raw(client)
    status = retrying(client, lambda: lua.SEND(c, keys_, [job_id, message_id, payload, rec]), _deadline(deadline),
                      f" (gave up sending {message_id!r})")
    _refuse(int(status), group_id, job_id)


def record_call(client: redis.Redis, group_id: str, job_id: str, name: str, result: str,
                detail: str | None = None, *, deadline: float | None = None) -> None:
    """Append one API-call record to the group's log (``group.api_calls`` reads it)."""
    g = group_id
    c = raw(client)
    retrying(client, lambda: lua.LOG(c, [keys.group_info(g), keys.group_members(g), keys.group_api_log(g)],
                                     [job_id, call_record(job_id, name, result, detail)]), _deadline(deadline))


def _refuse(status: int, group_id: str, job_id: str) -> None:
    if status == -1:
        raise GroupNotFound(group_id)
    if status == -2:
        raise NotGroupMember(group_id, job_id)


# --- waiting ---------------------------------------------------------------
class _Check:
    __slots__ = ("data", "members_json", "status", "timeout")

    def __init__(self, reply: Any) -> None:
        reply = list(reply or [-1])
        self.status = int(reply[0])
        self.timeout = float(_s(reply[1])) if len(reply) > 1 and reply[1] is not None else 600.0
        self.members_json = reply[2] if len(reply) > 2 and reply[2] is not None else None
        self.data = _pairs(reply[3]) if len(reply) > 3 else {}


def _first_failed(check: _Check) -> tuple[str, str]:
    order = [job for job, _ in json.loads(_s(check.members_json))] if check.members_json else []
    job = next((j for j in order if j in check.data), None) or min(check.data)
    return job, check.data[job]


#: subscriber connections kept for the next wait of a process (a sync loop opens no connection per round)
MAX_IDLE_SUBSCRIBERS = 64
_IDLE: weakref.WeakKeyDictionary[redis.Redis, list[Any]] = weakref.WeakKeyDictionary()


def _subscribe(c: redis.Redis, channel: str) -> Any:
    """A subscription to ``channel`` that Redis has confirmed: anything published from now on reaches it.

    Reuses an idle subscriber connection of ``c`` when there is one."""
    with _RAW_LOCK:
        idle = _IDLE.get(c)
        sub = idle.pop() if idle else None
    if sub is None:
        sub = c.pubsub()
    wanted = channel.encode()
    try:
        sub.subscribe(channel)
        limit = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while True:  # skip what the connection's last user left (its unsubscribe, late messages)
            msg = sub.get_message(timeout=max(0.01, limit - time.monotonic()))
            if msg is not None and msg.get("type") in ("subscribe", b"subscribe") and msg.get("channel") == wanted:
                return sub
            if time.monotonic() >= limit:
                raise redis.TimeoutError("Redis did not confirm the subscription")
    except BaseException:
        _close(sub)
        raise


def _release(c: redis.Redis, sub: Any, channel: str) -> None:
    """Unsubscribe and keep the connection for the next wait (closed if that fails or enough are kept)."""
    try:
        sub.unsubscribe(channel)
    except Exception:  # noqa: BLE001 - a broken link is closed, not kept
        _close(sub)
        return
    with _RAW_LOCK:
        idle = _IDLE.setdefault(c, [])
        if len(idle) < MAX_IDLE_SUBSCRIBERS:
            idle.append(sub)
            return
    _close(sub)


def _close(sub: Any) -> None:
    try:
        sub.close()
    except Exception:  # noqa: BLE001 - the wait's outcome matters, not the cleanup
        pass


def _await(client: redis.Redis, group_id: str, message_id: str, check: Callable[[], _Check],
           relevant: Callable[[str], bool], timeout: float | None, started: float, *,
           sub: Any = None, role: str | None = None, stop: Callable[[], str | None] | None = None) -> _Check:
    """Block until ``check`` reports done; raise on failure, timeout, a stop or lost Redis.

    ``sub``: the caller already subscribed and read the state."""
    c = raw(client)
    channel = keys.group_channel(group_id)
    wanted = channel.encode()
    deadline = started + (timeout if timeout is not None else CONNECT_BUDGET)
    effective = timeout
    need_check, final, backoff = sub is None, False, Backoff()
    last_read = time.monotonic()
    try:
        while True:
            try:
                if sub is None:
                    sub = _subscribe(c, channel)
                    need_check = True
                if need_check:
                    need_check = False
                    res = check()
                    last_read = time.monotonic()
                    backoff.reset()
                    if effective is None:
                        effective = res.timeout
                        deadline = started + effective
                    if res.status == 2:
                        return res
                    if res.status == 0:
                        raise GroupMemberFailed(*_first_failed(res))
                    if res.status == -1:
                        raise GroupNotFound(group_id)
                    if res.status == -3:
                        raise MultiNodeUsageError(f"no role {role!r} in this group")
                    if final:
                        raise BarrierTimeout(message_id, effective)
                why = stop() if stop is not None else None
                if why:
                    raise WaitStopped(message_id, why)
                now = time.monotonic()
                if deadline - now <= 0:
                    final = need_check = True  # one last read before giving up
                    continue
                block = min(deadline - now, last_read + WAKE_SLICE - now, STOP_SLICE if stop else WAKE_SLICE)
                msg = sub.get_message(timeout=max(block, 0.0)) if block > 0 else None
                if msg is None:
                    # a silent slice ends in a re-read: it catches a wake-up lost with a connection
                    need_check = time.monotonic() - last_read >= WAKE_SLICE
                elif msg.get("channel") != wanted:
                    pass  # a late message of the connection's previous wait
                elif msg.get("type") in ("subscribe", b"subscribe") or relevant(_s(msg.get("data", b""))):
                    need_check = True
            except CONNECTION_ERRORS as exc:
                if sub is not None:
                    _close(sub)
                sub, need_check = None, True
                if deadline - time.monotonic() <= 0:
                    raise ServiceUnavailable(
                        safe_url(client), f"{_reason(exc)} (gave up waiting for {message_id!r} after "
                                          f"{deadline - started:g}s)") from exc
                backoff.pause(deadline, stop)
    finally:
        if sub is not None:
            _release(c, sub, channel)


def _pass_record(record: tuple[str, str] | None) -> list[str]:
    """ARGV for a check script: job id and the pass record it appends when done."""
    return [record[0], call_record(record[0], record[1], "pass")] if record else ["", ""]


def _message_wait(client: redis.Redis, group_id: str, message_id: str, mode: str, role: str | None,
                  timeout: float | None, record: tuple[str, str] | None,
                  stop: Callable[[], str | None] | None) -> Received:
    started = time.monotonic()
    check_message_id(message_id)
    if role is not None:
        check_role(role)
    g = group_id
    c = raw(client)
    keys_ = [keys.group_info(g), keys.group_members(g), keys.group_failed(g),
             keys.group_message(g, message_id), keys.group_api_log(g)]
    args_ = [mode, role or "", *_pass_record(record)]
    wanted = "m " + message_id
    res = _await(client, group_id, message_id, lambda: _Check(lua.WAIT_CHECK(c, keys_, args_)),
                 lambda p: p == wanted or p.startswith("f "), timeout, started, role=role, stop=stop)
    return _ordered(res.members_json, res.data)


def wait_any(client: redis.Redis, group_id: str, message_id: str, *, role: str | None = None,
             timeout: float | None = None, record: tuple[str, str] | None = None,
             stop: Callable[[], str | None] | None = None) -> Received:
    """``lava-wait``: until any member (the caller too) - or any member of ``role`` - has sent it.

    The role form is for the runner's delayed start (``expect_role`` waits
    for ``lava_start``).  ``record=(job_id, call name)`` appends the pass
    record in the same step as the release.  ``stop()`` returning a reason
    ends the wait with ``WaitStopped`` (asked every ``STOP_SLICE``)."""
    return _message_wait(client, group_id, message_id, "role-any" if role else "any", role, timeout, record, stop)


def wait_all(client: redis.Redis, group_id: str, message_id: str, role: str | None = None, *,
             timeout: float | None = None, record: tuple[str, str] | None = None,
             stop: Callable[[], str | None] | None = None) -> Received:
    """``lava-wait-all``: until every member (of ``role``) has sent ``message_id``.

    The result holds every sender's data, of any role (as LAVA documents)."""
    return _message_wait(client, group_id, message_id, "role" if role else "all", role, timeout, record, stop)


def sync(client: redis.Redis, group_id: str, job_id: str, message_id: str, *,
         timeout: float | None = None, record: str | None = None,
         stop: Callable[[], str | None] | None = None) -> Received:
    """``lava-sync``: a reusable barrier; the k-th sync of an id by each member meets the others' k-th.

    Returns only the senders of ``message_id`` that sent data (usually none);
    ``record`` names the API call whose pass record is appended on release."""
    started = time.monotonic()
    check_message_id(message_id)
    g = group_id
    c = raw(client)
    channel = keys.group_channel(g)
    sync_keys = [keys.group_info(g), keys.group_members(g), keys.group_failed(g), keys.group_sync(g, message_id),
                 keys.group_message(g, message_id), keys.group_api_log(g)]
    enter_keys = [*sync_keys, keys.group_keys(g), channel]
    token = os.urandom(8).hex()  # makes a retried arrival count once
    passed = (job_id, record) if record else None
    sub: Any = None

    def enter() -> list[Any]:
        # Subscribed (and confirmed) before arriving: the release published by the last arrival reaches us.
        nonlocal sub
        if sub is None:
            sub = _subscribe(c, channel)
        try:
            return list(lua.SYNC_ENTER(c, enter_keys, [job_id, message_id, token, *_pass_record(passed)[1:]]))
        except CONNECTION_ERRORS:
            _close(sub)
            sub = None
            raise

    waiting = False
    try:
        budget = timeout if timeout is not None else CONNECT_BUDGET
        reply = retrying(client, enter, started + budget, f" (gave up syncing on {message_id!r} after {budget:g}s)")
        res = _Check(reply)
        _refuse(res.status, group_id, job_id)
        if res.status == 0:
            raise GroupMemberFailed(*_first_failed(res))
        if res.status == 2:  # the last to arrive: released at once
            return _ordered(res.members_json, res.data)
        waiting = True
    finally:
        if not waiting and sub is not None:
            _release(c, sub, channel)
    gen = int(reply[4])

    def relevant(payload: str) -> bool:
        if payload.startswith("f "):
            return True
        parts = payload.split(" ", 2)
        if parts[0] != "s" or len(parts) != 3 or parts[2] != message_id:
            return False
        return not parts[1].isdigit() or int(parts[1]) >= gen  # a garbled hint: re-read to be sure

    res = _await(client, group_id, message_id,
                 lambda: _Check(lua.SYNC_CHECK(c, sync_keys, [gen, *_pass_record(passed)])),
                 relevant, timeout if timeout is not None else res.timeout, started, sub=sub, stop=stop)
    return _ordered(res.members_json, res.data)
