"""The MultiNode message store and its waits: send, wait, wait-all, sync.

State lives in Redis (see ``lua/*.lua`` for the scripts); the group's pub/sub
channel only wakes waiters.  A wait reads the state, and if it is not yet
satisfied subscribes and reads again, then blocks on the subscription and
re-reads on every relevant wake-up until the state satisfies it, a member
fails, or the deadline passes.  A blocking read lasts at most ``WAKE_SLICE``
seconds: a silent slice ends in a re-read, which also proves the connection
alive, so a wait of any length outlives no dead socket.  A dropped or refused
connection is reopened, re-subscribed and re-read until the wait's own
deadline, then the wait fails with ``ServiceUnavailable``.

Values are bytes-safe: what is stored is JSON of text that encodes as UTF-8
(``check_data`` refuses anything else at send, naming the key), and what is
read is made valid text whatever is in Redis, so one member's odd bytes can
never break another member's wait.

Every function speaks through one client, a
:class:`~convoy.coordinator.multinode.resp.RespConn`: the ``lava-*``
commands open one from ``CONVOY_REDIS_URL`` (cheap to import, one socket that
both subscribes and reads, so the wait's ordering is Redis's own); workers and
coordinators open one to the same Redis through ``group.connect``.  One
client means one reply shape (text decoded with replacement, RESP3 maps as
dicts), one set of connection errors and one reconnection loop.
"""
from __future__ import annotations

import json
import os
import time

from convoy.coordinator.state import keys
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

    from convoy.coordinator.multinode.resp import RespConn

#: how long a call keeps reconnecting before the group's own timeout is known
CONNECT_BUDGET = 30.0
#: the longest one blocking read waits before the state is re-read (as ``connection.BLOCK_SLICE_SECONDS``)
WAKE_SLICE = 10.0
#: a final read after the deadline may take this much longer (the deadline's own check)
FINAL_READ_GRACE = 1.0
#: message ids: what LAVA's scripts use, and safe in a key, a channel payload and a cache file
MAX_MESSAGE_ID = 256
#: largest JSON of one member's data for one message (every waiter of the id receives it)
MAX_DATA = 64 * 1024
#: payload of a wake-up that means "re-read" (a (re)subscription)
RESUBSCRIBED = ""

Received = dict[str, dict[str, str]]
"""Message data by sender job id, in the group's member order."""


def _s(value: Any) -> str:
    return str(value)


def _text(value: Any) -> str:
    """``value`` as text that always encodes as UTF-8 (lone surrogates become U+FFFD)."""
    text = _s(value)
    if _is_utf8(text):
        return text
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_name(text: str) -> bool:
    """Empty, or holds a space, a control character or a byte that is not UTF-8."""
    return not text or any(c.isspace() or not c.isprintable() for c in text)


def check_message_id(message_id: Any) -> str:
    """``message_id`` if usable, else ``MultiNodeUsageError`` saying why (exit 2 in the commands)."""
    if not isinstance(message_id, str) or _bad_name(message_id) or "=" in message_id \
            or len(message_id) > MAX_MESSAGE_ID:
        raise MultiNodeUsageError(f"bad message id {message_id!r}: 1-{MAX_MESSAGE_ID} printable characters "
                                  "(UTF-8), no spaces, no '='")
    return message_id


def check_role(role: Any) -> str:
    if not isinstance(role, str) or _bad_name(role):
        raise MultiNodeUsageError(f"bad role {role!r}: printable characters (UTF-8), no spaces")
    return role


def check_data(data: Mapping[str, str]) -> dict[str, str]:
    """``data`` if every key and value can be stored and handed to every waiter, else a usage error.

    Keys: printable UTF-8 text without spaces or ``=``; values: one line of
    UTF-8 text.  Non-UTF-8 bytes (``lava-send id k=$'\\xff'``) are refused
    here, naming the key, rather than stored for other members to trip on."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or _bad_name(key) or "=" in key:
            raise MultiNodeUsageError(f"bad key {key!r}: printable characters (UTF-8), no spaces, no '='")
        if not isinstance(value, str):
            raise MultiNodeUsageError(f"bad value for {key!r}: text, not {type(value).__name__}")
        if not _is_utf8(value):
            raise MultiNodeUsageError(f"bad value for {key!r}: not valid UTF-8 (send text; encode binary data, "
                                      "e.g. base64)")
        if "\n" in value or "\r" in value or "\0" in value:
            raise MultiNodeUsageError(f"bad value for {key!r}: values are one line")
        out[key] = value
    return out


def _pairs(flat: Any) -> dict[str, str]:
    flat = flat or []
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def is_connection_error(exc: BaseException) -> bool:
    """True for a lost or refused connection (``RespConn`` raises the builtin kinds)."""
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


class Backoff:
    """Pauses between reconnection attempts: 0.05 s doubling to 1 s, never past the deadline.

    The stdlib counterpart of ``connection.reconnecting`` (tenacity costs the
    ``lava-*`` commands ~70 ms at start)."""

    def __init__(self) -> None:
        self.delay = 0.05

    def reset(self) -> None:
        self.delay = 0.05

    def pause(self, deadline: float) -> None:
        time.sleep(max(0.0, min(self.delay, deadline - time.monotonic())))
        self.delay = min(self.delay * 2, 1.0)


def retrying(conn: RespConn, call: Callable[[], Any], deadline: float, what: str = "") -> Any:
    """Run ``call``, reconnecting with back-off after connection errors until ``deadline``.

    Every connect and read of ``conn`` is capped at the deadline, so this
    returns or raises ``ServiceUnavailable`` by then (not a fixed time later)."""
    backoff = Backoff()
    conn.limit(deadline + FINAL_READ_GRACE)
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            conn.reset()
            if deadline - time.monotonic() <= 0:
                raise ServiceUnavailable(conn.safe_url, f"{_reason(exc)}{what}") from exc
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


def load_group(conn: RespConn, group_id: str, *, deadline: float | None = None) -> Group:
    """The group's members (in job order) and timeout; ``GroupNotFound`` if absent."""
    deadline = time.monotonic() + CONNECT_BUDGET if deadline is None else deadline
    reply = retrying(conn, lambda: conn.execute_command(
        "HMGET", keys.group_info(group_id), "members", "timeout"), deadline)
    if not reply or reply[0] is None:
        raise GroupNotFound(group_id)
    members = [(_text(j), _text(r)) for j, r in json.loads(_s(reply[0]))]
    return Group(group_id, members, float(_s(reply[1] or 600)))


def read_message(conn: RespConn, group_id: str, message_id: str, *, deadline: float | None = None) -> Received:
    """What has been sent for ``message_id`` so far, without waiting."""
    deadline = time.monotonic() + CONNECT_BUDGET if deadline is None else deadline
    group = load_group(conn, group_id, deadline=deadline)
    raw = retrying(conn, lambda: conn.execute_command(
        "HGETALL", keys.group_message(group_id, message_id)), deadline)
    data = {_s(k): _s(v) for k, v in (raw or {}).items()}  # RESP3: a map
    return _ordered(json.dumps(group.members), data)


def _ordered(members_json: Any, data: dict[str, str]) -> Received:
    order = [job for job, _ in json.loads(_s(members_json))] if members_json else []
    senders = [j for j in order if j in data] + sorted(j for j in data if j not in order)
    return {_text(job): _received(data[job]) for job in senders}


def _received(raw: Any) -> dict[str, str]:
    """One sender's stored data as text, whatever is in Redis (never an error for the reader).

    ``send`` stores a JSON object of UTF-8 text; anything else (written
    around ``send``) is read as no data, and undecodable text is replaced."""
    try:
        data = json.loads(_s(raw))
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


def send(conn: RespConn, group_id: str, job_id: str, message_id: str,
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
    args = [job_id, message_id, payload, rec]
    deadline = time.monotonic() + CONNECT_BUDGET if deadline is None else deadline
    status = retrying(conn, lambda: lua.SEND(conn, keys_, args), deadline,
                      f" (gave up sending {message_id!r})")
    _refuse(int(status), group_id, job_id)


def record_call(conn: RespConn, group_id: str, job_id: str, name: str, result: str,
                detail: str | None = None, *, deadline: float | None = None) -> None:
    """Append one API-call record to the group's log (``group.api_calls`` reads it)."""
    g = group_id
    deadline = time.monotonic() + CONNECT_BUDGET if deadline is None else deadline
    retrying(conn, lambda: lua.LOG(conn, [keys.group_info(g), keys.group_members(g), keys.group_api_log(g)],
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


def _await(link: RespConn, group_id: str, message_id: str, check: Callable[[RespConn], _Check],
           relevant: Callable[[str], bool], timeout: float | None, started: float,
           *, subscribed: bool = False, role: str | None = None) -> _Check:
    """Block until ``check`` reports done; raise on failure, timeout or lost Redis.

    ``subscribed``: the caller already subscribed and read the state.  A
    SUBSCRIBE is queued and goes out with the next read on the same socket,
    so the read is ordered after it and costs no extra round trip."""
    channel = keys.group_channel(group_id)
    deadline = started + (timeout if timeout is not None else CONNECT_BUDGET)
    effective = timeout
    link.limit(deadline + FINAL_READ_GRACE)
    need_check, final, backoff = not subscribed, False, Backoff()
    try:
        while True:
            try:
                if not subscribed:
                    link.subscribe(channel)
                    subscribed, need_check = True, True
                if need_check:
                    need_check = False
                    res = check(link)
                    backoff.reset()
                    if effective is None:
                        effective = res.timeout
                        deadline = started + effective
                        link.limit(deadline + FINAL_READ_GRACE)
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
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    final = need_check = True  # one last read before giving up
                    continue
                # a silent slice ends in a re-read: it proves the link alive (a dead one
                # raises and is reopened) and catches a wake-up lost with a connection
                payload = link.wake(min(remaining, WAKE_SLICE))
                if payload is None or payload == RESUBSCRIBED or relevant(payload):
                    need_check = True
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                link.reset()
                subscribed, need_check = False, True
                if deadline - time.monotonic() <= 0:
                    raise ServiceUnavailable(
                        link.safe_url, f"{_reason(exc)} (gave up waiting for {message_id!r} after "
                                    f"{deadline - started:g}s)") from exc
                backoff.pause(deadline)
    finally:
        if subscribed:
            try:
                link.unsubscribe(channel)
            except Exception:  # noqa: BLE001 - the wait's outcome matters, not the cleanup
                link.reset()


def _pass_record(record: tuple[str, str] | None) -> list[str]:
    """ARGV for a check script: job id and the pass record it appends when done."""
    return [record[0], call_record(record[0], record[1], "pass")] if record else ["", ""]


def _message_wait(conn: RespConn, group_id: str, message_id: str, mode: str, role: str | None,
                  timeout: float | None, record: tuple[str, str] | None) -> Received:
    started = time.monotonic()
    check_message_id(message_id)
    if role is not None:
        check_role(role)
    g = group_id
    keys_ = [keys.group_info(g), keys.group_members(g), keys.group_failed(g),
             keys.group_message(g, message_id), keys.group_api_log(g)]
    wanted = "m " + message_id
    res = _await(conn, group_id, message_id,
                 lambda link: _Check(lua.WAIT_CHECK(link, keys_, [mode, role or "", *_pass_record(record)])),
                 lambda p: p == wanted or p.startswith("f "), timeout, started, role=role)
    return _ordered(res.members_json, res.data)


def wait_any(conn: RespConn, group_id: str, message_id: str, *, role: str | None = None,
             timeout: float | None = None, record: tuple[str, str] | None = None) -> Received:
    """``lava-wait``: until any member (the caller too) - or any member of ``role`` - has sent it.

    The role form is for the runner's delayed start (``expect_role`` waits
    for ``lava_start``).  ``record=(job_id, call name)`` appends the pass
    record in the same step as the release."""
    return _message_wait(conn, group_id, message_id, "role-any" if role else "any", role, timeout, record)


def wait_all(conn: RespConn, group_id: str, message_id: str, role: str | None = None, *,
             timeout: float | None = None, record: tuple[str, str] | None = None) -> Received:
    """``lava-wait-all``: until every member (of ``role``) has sent ``message_id``.

    The result holds every sender's data, of any role (as LAVA documents)."""
    return _message_wait(conn, group_id, message_id, "role" if role else "all", role, timeout, record)


def sync(link: RespConn, group_id: str, job_id: str, message_id: str, *,
         timeout: float | None = None, record: str | None = None) -> Received:
    """``lava-sync``: a reusable barrier; the k-th sync of an id by each member meets the others' k-th.

    Returns only the senders of ``message_id`` that sent data (usually none);
    ``record`` names the API call whose pass record is appended on release."""
    started = time.monotonic()
    check_message_id(message_id)
    g = group_id
    channel = keys.group_channel(g)
    sync_keys = [keys.group_info(g), keys.group_members(g), keys.group_failed(g), keys.group_sync(g, message_id),
                 keys.group_message(g, message_id), keys.group_api_log(g)]
    enter_keys = [*sync_keys, keys.group_keys(g), channel]
    token = os.urandom(8).hex()  # makes a retried arrival count once
    passed = (job_id, record) if record else None

    def enter() -> list[Any]:
        # Subscribed before arriving: the release published by the last arrival reaches us
        # (both go out in one write, ordered on one connection).
        link.subscribe(channel)
        return list(lua.SYNC_ENTER(link, enter_keys, [job_id, message_id, token, *_pass_record(passed)[1:]]))

    waiting = False
    try:
        budget = timeout if timeout is not None else CONNECT_BUDGET
        reply = retrying(link, enter, started + budget,
                         f" (gave up syncing on {message_id!r} after {budget:g}s)")
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
        if parts[0] != "s" or len(parts) != 3 or parts[2] != message_id:
            return False
        return not parts[1].isdigit() or int(parts[1]) >= gen  # a garbled hint: re-read to be sure

    res = _await(link, group_id, message_id,
                 lambda lk: _Check(lua.SYNC_CHECK(lk, sync_keys, [gen, *_pass_record(passed)])),
                 relevant, timeout if timeout is not None else res.timeout, started, subscribed=True)
    return _ordered(res.members_json, res.data)
