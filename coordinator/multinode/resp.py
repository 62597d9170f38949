"""A small RESP3 Redis client on the standard library: the MultiNode store's one client.

Why not redis-py here: ``import redis`` (8.x) costs about 100 ms (it pulls in
asyncio, cluster and observability modules), more than the whole 60 ms budget
of one MultiNode command.  The commands need a handful of commands and one
subscription.  RESP3 lets a subscribed connection keep running commands, so a
waiter holds exactly one socket, and ``SUBSCRIBE`` followed by a state read on
that socket is ordered by Redis itself: nothing published after the read can
be missed.  Workers and coordinators use it too (``group.connect`` opens one
to the Redis of their redis-py client), so the store has one client.

No automatic reconnection: a broken socket raises ``ConnectionError`` and the
next call connects afresh; the caller decides what to re-read (a subscription
is not silently restored behind its back).

Timeouts: a reply to a command must come within ``io_timeout`` (else the link
is dead); a blocking wait for a published message (``wake``) is bounded only
by the caller's own timeout, so a wait of minutes never trips ``io_timeout``.
``limit(deadline)`` caps every connect and read at the caller's deadline, so a
command whose Redis is unreachable fails within its own ``--timeout``.
"""
from __future__ import annotations

import socket
import time
from collections import deque
from urllib.parse import unquote, urlsplit

from convoy.coordinator.state.urls import redact_url, safe_client_name

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from typing import Any

CRLF = b"\r\n"


class RespError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


class _Incomplete(Exception):
    """The buffer does not hold a whole reply yet."""


class _Push(list):
    """An out-of-band RESP3 push (pub/sub message, subscribe confirmation)."""


def encode(args: tuple[Any, ...]) -> bytes:
    """One command in RESP's array-of-bulk-strings form."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        else:
            data = str(arg).encode("ascii")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _line(buf: bytearray, pos: int) -> tuple[bytes, int]:
    end = buf.find(CRLF, pos)
    if end < 0:
        raise _Incomplete
    return bytes(buf[pos:end]), end + 2


def parse(buf: bytearray, pos: int = 0) -> tuple[Any, int]:
    """Decode one RESP2/RESP3 value at ``pos``; strings come back as ``str``."""
    if pos >= len(buf):
        raise _Incomplete
    kind = bytes(buf[pos : pos + 1])
    line, pos = _line(buf, pos + 1)
    if kind == b"+":
        return line.decode("utf-8", "replace"), pos
    if kind == b"-":
        return RespError(line.decode("utf-8", "replace")), pos
    if kind in (b":", b"("):
        return int(line), pos
    if kind in (b"$", b"=", b"!"):
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        text = bytes(buf[pos : pos + size]).decode("utf-8", "replace")
        pos += size + 2
        if kind == b"=":
            text = text[4:]  # verbatim string: "txt:" prefix
        return (RespError(text) if kind == b"!" else text), pos
    if kind == b"_":
        return None, pos
    if kind == b",":
        return float(line), pos
    if kind == b"#":
        return line == b"t", pos
    if kind in (b"*", b"~", b">", b"%", b"|"):
        count = int(line)
        if count < 0:
            return None, pos
        if kind in (b"%", b"|"):
            count *= 2
        items = []
        for _ in range(count):
            item, pos = parse(buf, pos)
            items.append(item)
        if kind == b"|":  # attributes precede the real reply: skip them
            return parse(buf, pos)
        if kind == b"%":
            return dict(zip(items[::2], items[1::2])), pos
        return (_Push(items) if kind == b">" else items), pos
    raise RespError(f"protocol error: unexpected reply type {kind!r}")


class RespConn:
    """One Redis connection (RESP3), opened lazily, reopened after a failure."""

    #: SUBSCRIBE is queued and sent with the next command (see ``store._await``)
    QUEUED_SUBSCRIBE = True

    def __init__(self, url: str, *, connect_timeout: float = 2.0, io_timeout: float = 10.0,
                 name: str | None = None) -> None:
        self.url = url
        self.name = safe_client_name(name) if name else None
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self._deadline: float | None = None  # see ``limit``
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._pushes: deque[_Push] = deque()
        self._channels: set[str] = set()
        self._pending = bytearray()  # commands sent with the next write: (UN)SUBSCRIBE, HELLO
        self._handshake = 0  # replies of HELLO / SELECT still to read and check
        self._timeout: float | None = -1.0  # the socket's current timeout
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} in {redact_url(url)!r}")
        self._parts = parts

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return redact_url(self.url)

    def limit(self, deadline: float | None) -> None:
        """Cap every connect and reply wait at ``deadline`` (``time.monotonic()``; None: no cap)."""
        self._deadline = deadline

    def _bounded(self, seconds: float) -> float:
        """``seconds``, or less if the deadline comes first; TimeoutError once it has passed."""
        if self._deadline is None:
            return seconds
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        return min(seconds, remaining)

    # -- connection -------------------------------------------------------
    def _connect(self) -> socket.socket:
        p = self._parts
        timeout = self._bounded(self.connect_timeout)
        if p.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(p.path)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((p.hostname or "127.0.0.1", p.port or 6379), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if p.scheme == "rediss":
                import ssl  # only for TLS URLs: keeps plain starts cheap

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=p.hostname)
        self._sock = sock
        self._buf.clear()
        self._pushes.clear()
        self._channels.clear()
        self._pending.clear()
        hello: list[Any] = ["HELLO", "3"]
        if p.password is not None:
            hello += ["AUTH", unquote(p.username or "default"), unquote(p.password)]
        if self.name:  # shows in CLIENT LIST: which command of which member holds the connection
            hello += ["SETNAME", self.name]
        db = p.path.strip("/") if p.scheme != "unix" else ""
        if p.scheme == "unix" and "db=" in p.query:
            db = p.query.split("db=", 1)[1].split("&", 1)[0]
        cmds = [tuple(hello)] + ([("SELECT", db)] if db not in ("", "0") else [])
        # Sent with the first command and checked when its reply is read: no extra round trip.
        self._pending += b"".join(encode(c) for c in cmds)
        self._handshake = len(cmds)
        self._timeout = -1.0
        return sock

    def close(self) -> None:
        """Drop the socket (and with it any subscription)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    reset = close

    # -- reading ----------------------------------------------------------
    def _fill(self, timeout: float | None) -> bool:
        """Read more bytes; False on timeout.  EOF or an error closes and raises."""
        sock = self._sock
        assert sock is not None
        try:
            if timeout != self._timeout:  # settimeout is a system call: only when it changes
                sock.settimeout(timeout)
                self._timeout = timeout
            data = sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError as exc:
            self.close()
            raise ConnectionError(f"lost connection to Redis: {exc}") from exc
        if not data:
            self.close()
            raise ConnectionError("Redis closed the connection")
        self._buf += data
        return True

    def _take(self) -> Any:
        value, pos = parse(self._buf)
        del self._buf[:pos]
        return value

    def _read(self) -> Any:
        """The next reply that is not a push (pushes are queued for ``wake``)."""
        while True:
            try:
                value = self._take()
            except _Incomplete:
                try:
                    wait = self._bounded(self.io_timeout)
                except TimeoutError:
                    self.close()
                    raise
                if not self._fill(wait):
                    self.close()
                    raise TimeoutError("no reply from Redis before the deadline" if wait < self.io_timeout
                                       else f"no reply from Redis within {wait:g}s") from None
                continue
            if isinstance(value, _Push):
                if self._channels:  # late messages after UNSUBSCRIBE are dropped
                    self._pushes.append(value)
                continue
            if self._handshake:  # HELLO / SELECT replies come first
                self._handshake -= 1
                if isinstance(value, RespError):
                    self.close()
                    raise value
                continue
            return value

    # -- commands ---------------------------------------------------------
    def pipeline(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send several commands in one write; error replies are returned, not raised."""
        sock = self._sock or self._connect()
        self._write(sock, b"".join(encode(c) for c in commands))
        return [self._read() for _ in commands]

    def _write(self, sock: socket.socket, data: bytes) -> None:
        """One ``sendall`` carrying the queued (un)subscriptions first: fewer system calls."""
        if self._pending:
            data, self._pending = bytes(self._pending) + data, bytearray()
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ConnectionError(f"lost connection to Redis: {exc}") from exc

    def execute_command(self, *args: Any) -> Any:
        """Run one command; an error reply raises ``RespError``."""
        reply = self.pipeline(args)[0]
        if isinstance(reply, RespError):
            raise reply
        return reply

    # -- pub/sub ----------------------------------------------------------
    def subscribe(self, channel: str) -> None:
        """Queue SUBSCRIBE; it goes out with the next command, whose reply is ordered after it."""
        if self._sock is None:
            self._connect()
        self._pending += encode(("SUBSCRIBE", channel))
        self._pushes.clear()
        self._channels.add(channel)

    def unsubscribe(self, channel: str) -> None:
        """Queue UNSUBSCRIBE (sent with the next write, or never if the socket closes first)."""
        if self._sock is not None and channel in self._channels:
            self._channels.discard(channel)
            self._pending += encode(("UNSUBSCRIBE", channel))
        self._pushes.clear()

    def wake(self, timeout: float) -> str | None:
        """Block until a published message arrives; its payload, or None on timeout."""
        deadline = time.monotonic() + timeout
        if self._pending and self._sock is not None:
            self._write(self._sock, b"")
        while True:
            while self._pushes:
                push = self._pushes.popleft()
                if push and push[0] == "message" and len(push) == 3:
                    return str(push[2])
            try:
                value = self._take()
            except _Incomplete:
                if self._sock is None:
                    raise ConnectionError("not connected") from None
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._fill(remaining):
                    return None
                continue
            if isinstance(value, _Push):
                if self._channels:
                    self._pushes.append(value)
            elif self._handshake:
                self._handshake -= 1
                if isinstance(value, RespError):
                    self.close()
                    raise value
