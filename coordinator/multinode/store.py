"""The MultiNode message store and its waits: send, wait, wait-all, sync.

State lives in Redis (see ``lua.py`` for the scripts); the group's pub/sub
channel only wakes waiters.  A wait reads the state, and if it is not yet
satisfied subscribes and reads again, then blocks on the subscription and
re-reads on every relevant wake-up until the state satisfies it, a member
fails, or the deadline passes.  Nothing polls.  A dropped connection is
reopened, re-subscribed and re-read until the deadline.

Every function takes either a :class:`~convoy.coordinator.multinode.resp.RespConn`
(what the ``lava-*`` commands use: cheap to import, one socket) or a redis-py
client (what the job runner holds).
"""
from __future__ import annotations

import json
import os
import sys
import time

from convoy.coordinator import keys
from convoy.coordinator.multinode import lua
from convoy.errors import (
    BarrierTimeout,
    GroupMemberFailed,
    GroupNotFound,
    MultiNodeUsageError,
    NotGroupMember,
    ServiceUnavailable,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from collections.abc import Callable, Mapping
    from typing import Any

#: how long a call keeps reconnecting before the group's own timeout is known
CONNECT_BUDGET = 30.0
#: largest JSON of one member's data for one message (every waiter of the id receives it)
MAX_DATA = 64 * 1024
#: payload of a wake-up that means "re-read" (a (re)subscription)
RESUBSCRIBED = ""

Received = dict[str, dict[str, str]]
"""Message data by sender job id, in the group's member order."""


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pairs(flat: Any) -> dict[str, str]:
    flat = flat or []
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


def is_connection_error(exc: BaseException) -> bool:
    """True for a lost or refused connection, from either client library."""
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    redis_exc = sys.modules.get("redis.exceptions")
    return bool(redis_exc) and isinstance(exc, (redis_exc.ConnectionError, redis_exc.TimeoutError))


def _url(client: Any) -> str:
    url = getattr(client, "url", None)
    if url:
        return url
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


class _RedisPyLink:
    """Gives a redis-py client the RespConn waiting interface (client + one pubsub)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.url = _url(client)
        self._pubsub: Any = None

    def execute_command(self, *args: Any) -> Any:
        return self.client.execute_command(*args)

    def subscribe(self, channel: str) -> None:
        # Separate connections: wait for the confirmation so a read made
        # after this returns is ordered after the subscription.
        self.reset()
        self._pubsub = self.client.pubsub()
        self._pubsub.subscribe(channel)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            msg = self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg and msg.get("type") in ("subscribe", b"subscribe"):
                return
        raise TimeoutError("no subscription confirmation from Redis within 10s")

    def unsubscribe(self, channel: str) -> None:
        self.reset()

    def wake(self, timeout: float) -> str | None:
        msg = self._pubsub.get_message(timeout=timeout)
        if msg is None:
            return None
        kind = _s(msg.get("type"))
        if kind == "message":
            return _s(msg.get("data"))
        return RESUBSCRIBED if kind == "subscribe" else None

    def reset(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken pubsub must not mask the cause
                pass


def _link(client: Any) -> Any:
    return client if hasattr(client, "wake") else _RedisPyLink(client)


def retrying(client: Any, call: Callable[[], Any], deadline: float) -> Any:
    """Run ``call``, reconnecting with back-off after connection errors until ``deadline``."""
    delay = 0.05
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            if hasattr(client, "reset"):
                client.reset()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceUnavailable(_url(client), str(exc)) from exc
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)


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


def load_group(client: Any, group_id: str, *, deadline: float | None = None) -> Group:
    """The group's members (in job order) and timeout; ``GroupNotFound`` if absent."""
    deadline = time.monotonic() + CONNECT_BUDGET if deadline is None else deadline
    reply = retrying(client, lambda: client.execute_command(
        "HMGET", keys.group_info(group_id), "members", "timeout"), deadline)
    if not reply or reply[0] is None:
        raise GroupNotFound(group_id)
    members = [(str(j), str(r)) for j, r in json.loads(_s(reply[0]))]
    return Group(group_id, members, float(_s(reply[1] or 600)))


def read_message(client: Any, group_id: str, message_id: str) -> Received:
    """What has been sent for ``message_id`` so far, without waiting."""
    group = load_group(client, group_id)
    raw = retrying(client, lambda: client.execute_command(
        "HGETALL", keys.group_message(group_id, message_id)), time.monotonic() + CONNECT_BUDGET)
    data = {_s(k): _s(v) for k, v in raw.items()} if isinstance(raw, dict) else _pairs(raw)
    return _ordered(json.dumps(group.members), data)


def _ordered(members_json: Any, data: dict[str, str]) -> Received:
    order = [job for job, _ in json.loads(_s(members_json))] if members_json else []
    senders = [j for j in order if j in data] + sorted(j for j in data if j not in order)
    return {job: json.loads(data[job]) for job in senders}


# --- send ------------------------------------------------------------------
def call_record(job_id: str, name: str, result: str, detail: str | None = None) -> str:
    """JSON of one API-call record (the script adds the member's role)."""
    record: dict[str, Any] = {"job_id": job_id, "name": name, "result": result, "time": time.time()}
    if detail:
        record["detail"] = detail
    return json.dumps(record)


def send(client: Any, group_id: str, job_id: str, message_id: str,
         data: Mapping[str, str] | None = None, *, record: bool = True,
         deadline: float | None = None) -> None:
    """Store ``job_id``'s data for ``message_id`` (replacing its earlier data) and wake waiters."""
    g = group_id
    keys_ = [keys.group_info(g), keys.group_members(g), keys.group_message(g, message_id),
             keys.group_keys(g), keys.group_api_log(g), keys.group_channel(g), keys.group_sync(g, message_id)]
    payload = json.dumps(dict(data or {}))
    if len(payload) > MAX_DATA:
        raise MultiNodeUsageError(f"message data of {len(payload)} bytes is over the {MAX_DATA}-byte limit: "
                                  "the MultiNode API is for small messages, transfer files yourself")
    rec = call_record(job_id, f"multinode-send-{message_id}", "pass") if record else ""
    args = [job_id, message_id, payload, rec]
    deadline = time.monotonic() + CONNECT_BUDGET if deadline is None else deadline
    status = retrying(client, lambda: lua.SEND(client, keys_, args), deadline)
    _refuse(int(status), group_id, job_id)


def record_call(client: Any, group_id: str, job_id: str, name: str, result: str,
                detail: str | None = None, *, deadline: float | None = None) -> None:
    """Append one API-call record to the group's log (``group.api_calls`` reads it)."""
    g = group_id
    deadline = time.monotonic() + CONNECT_BUDGET if deadline is None else deadline
    retrying(client, lambda: lua.LOG(client, [keys.group_info(g), keys.group_members(g),
                                              keys.group_api_log(g)],
                                     [job_id, call_record(job_id, name, result, detail)]), deadline)


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
        self.members_json = reply[2] if len(reply) > 2 else None
        self.data = _pairs(reply[3]) if len(reply) > 3 else {}


def _first_failed(check: _Check) -> tuple[str, str]:
    order = [job for job, _ in json.loads(_s(check.members_json))] if check.members_json else []
    job = next((j for j in order if j in check.data), None) or min(check.data)
    return job, check.data[job]


def _await(client: Any, group_id: str, message_id: str, check: Callable[[Any], _Check],
           relevant: Callable[[str], bool], timeout: float | None, started: float,
           *, subscribed: bool = False, role: str | None = None) -> _Check:
    """Block until ``check`` reports done; raise on failure, timeout or lost Redis.

    ``subscribed``: the caller already subscribed and read the state."""
    link = _link(client)
    channel = keys.group_channel(group_id)
    deadline = started + (timeout if timeout is not None else CONNECT_BUDGET)
    effective = timeout
    # A queued SUBSCRIBE rides with the first read for free; a redis-py pubsub costs a
    # connection and a round trip, so that client reads once before subscribing.
    fast_path = not getattr(link, "QUEUED_SUBSCRIBE", False)
    need_check, final, delay = not subscribed, False, 0.05
    try:
        while True:
            try:
                if not subscribed and not fast_path:
                    link.subscribe(channel)
                    subscribed, need_check = True, True
                if need_check:
                    need_check = False
                    res = check(link)
                    delay = 0.05
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
                    if not subscribed:  # fast path missed: subscribe, then read again
                        fast_path = False
                        continue
                    if final:
                        raise BarrierTimeout(message_id, effective)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    final = need_check = True  # one last read before giving up
                    continue
                payload = link.wake(remaining)
                if payload is None or payload == RESUBSCRIBED or relevant(payload):
                    need_check = True
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                link.reset()
                subscribed, need_check = False, True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServiceUnavailable(
                        _url(link), f"{exc} (gave up waiting for {message_id!r} after "
                                    f"{effective if effective is not None else timeout or 0:g}s)") from exc
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)
    finally:
        if subscribed:
            try:
                link.unsubscribe(channel)
            except Exception:  # noqa: BLE001 - the wait's outcome matters, not the cleanup
                link.reset()


def _pass_record(record: tuple[str, str] | None) -> list[str]:
    """ARGV for a check script: job id and the pass record it appends when done."""
    return [record[0], call_record(record[0], record[1], "pass")] if record else ["", ""]


def _message_wait(client: Any, group_id: str, message_id: str, mode: str, role: str | None,
                  timeout: float | None, record: tuple[str, str] | None) -> Received:
    started = time.monotonic()
    g = group_id
    keys_ = [keys.group_info(g), keys.group_members(g), keys.group_failed(g),
             keys.group_message(g, message_id), keys.group_api_log(g)]
    wanted = "m " + message_id
    res = _await(client, group_id, message_id,
                 lambda link: _Check(lua.WAIT_CHECK(link, keys_, [mode, role or "", *_pass_record(record)])),
                 lambda p: p == wanted or p.startswith("f "), timeout, started, role=role)
    return _ordered(res.members_json, res.data)


def wait_any(client: Any, group_id: str, message_id: str, *, role: str | None = None,
             timeout: float | None = None, record: tuple[str, str] | None = None) -> Received:
    """``lava-wait``: until any member (the caller too) - or any member of ``role`` - has sent it.

    The role form is for the runner's delayed start (``expect_role`` waits
    for ``lava_start``).  ``record=(job_id, call name)`` appends the pass
    record in the same step as the release."""
    return _message_wait(client, group_id, message_id, "role-any" if role else "any", role, timeout, record)


def wait_all(client: Any, group_id: str, message_id: str, role: str | None = None, *,
             timeout: float | None = None, record: tuple[str, str] | None = None) -> Received:
    """``lava-wait-all``: until every member (of ``role``) has sent ``message_id``.

    The result holds every sender's data, of any role (as LAVA documents)."""
    return _message_wait(client, group_id, message_id, "role" if role else "all", role, timeout, record)


def sync(client: Any, group_id: str, job_id: str, message_id: str, *,
         timeout: float | None = None, record: str | None = None) -> Received:
    """``lava-sync``: a reusable barrier; the k-th sync of an id by each member meets the others' k-th.

    Returns only the senders of ``message_id`` that sent data (usually none);
    ``record`` names the API call whose pass record is appended on release."""
    started = time.monotonic()
    g = group_id
    link = _link(client)
    channel = keys.group_channel(g)
    sync_keys = [keys.group_info(g), keys.group_members(g), keys.group_failed(g), keys.group_sync(g, message_id),
                 keys.group_message(g, message_id), keys.group_api_log(g)]
    enter_keys = [*sync_keys, keys.group_keys(g), channel]
    token = os.urandom(8).hex()  # makes a retried arrival count once
    passed = (job_id, record) if record else None

    def enter() -> list[Any]:
        # Subscribed before arriving: the release published by the last arrival reaches us
        # (with RespConn both go out in one write, ordered on one connection).
        link.subscribe(channel)
        return list(lua.SYNC_ENTER(link, enter_keys, [job_id, message_id, token, *_pass_record(passed)[1:]]))

    waiting = False
    try:
        reply = retrying(link, enter, started + (timeout if timeout is not None else CONNECT_BUDGET))
        res = _Check(reply)
        _refuse(res.status, group_id, job_id)
        if res.status == 0:
            raise GroupMemberFailed(*_first_failed(res))
        if res.status == 2:  # the last to arrive: released at once
            return _ordered(res.members_json, res.data)
        waiting = True
    finally:
        if not waiting:
            link.unsubscribe(channel)
    gen = int(reply[4])

    def relevant(payload: str) -> bool:
        if payload.startswith("f "):
            return True
        parts = payload.split(" ", 2)
        return parts[0] == "s" and len(parts) == 3 and parts[2] == message_id and int(parts[1]) >= gen

    res = _await(link, group_id, message_id,
                 lambda lk: _Check(lua.SYNC_CHECK(lk, sync_keys, [gen, *_pass_record(passed)])),
                 relevant, timeout if timeout is not None else res.timeout, started, subscribed=True)
    return _ordered(res.members_json, res.data)
