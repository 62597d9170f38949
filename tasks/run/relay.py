"""A job's MultiNode calls, relayed to its group's store by the process that runs the job.

The ``lava-*`` commands of a test script never see Redis: each one asks its
job's relay (:class:`MultiNodeRelay`) over a unix socket in the job's own
directory (:class:`RelayServer`, ``CONVOY_MULTINODE_SOCKET``), and the LAVA
test shell on a device hands it the calls it reads from marker lines
(:meth:`MultiNodeRelay.call`).  Either way the relay parses and checks the
call (``coordinator/multinode/args.py``, the same code as the commands), runs
it on the group store, records it in the group's API log, and answers with a
:class:`RelayReply`: the exit code, the output, and the lines the caller
writes to LAVA's cache files on its own side.

Exit codes and messages are the commands': 0 done; 1 failed (timeout, a
member failed, Redis unreachable until the call's deadline, the test was
stopped); 2 malformed call (usage on stderr).

Protocol (one request, one reply, one connection): the client sends one line
of JSON ``{"prog", "argv", "device_ip"?, "interfaces"?, "timeout"?, "cwd"?}``
and reads one line of JSON, the reply's fields.  A request over
``MAX_REQUEST`` bytes or that is not such an object is answered with exit 2
and a message; the server never lets a connection's bytes end it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from convoy.coordinator.multinode import args as mn_args
from convoy.coordinator.multinode import cachefile, store
from convoy.errors import ConvoyError, GroupMemberFailed, MultiNodeUsageError, ServiceUnavailable

log = logging.getLogger(__name__)

#: the environment variable that tells a ``lava-*`` command where its job's relay listens
SOCKET_ENV = "CONVOY_MULTINODE_SOCKET"
#: largest request line accepted (a ``lava-send`` holds at most ``args.MAX_DATA`` of data)
MAX_REQUEST = 256 * 1024
#: a client must send its whole request within this many seconds
REQUEST_SECONDS = 10.0
#: calls served at once by one job's relay; more are refused (exit 1)
MAX_CONNECTIONS = 256
#: longest socket path the kernel takes is 107 bytes; longer job directories get a private one in /tmp
MAX_SOCKET_PATH = 100


@dataclass
class RelayReply:
    """What a MultiNode call gives its caller.

    ``cache`` / ``network_cache``: the lines to write to LAVA's cache file /
    network cache file on the caller's side (``[]``: remove it; ``None``:
    leave it alone).  ``append_file`` / ``append_lines``: ``lava-network
    hosts FILE`` appends these lines to the caller's FILE."""

    code: int
    stdout: str = ""
    stderr: str = ""
    cache: list[str] | None = None
    network_cache: list[str] | None = None
    append_file: str | None = None
    append_lines: list[str] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _lines(lines: Sequence[str]) -> str:
    return "".join(line + "\n" for line in lines)


class MultiNodeRelay:
    """One group member's MultiNode API, for its test script's calls (thread-safe: one thread per call)."""

    def __init__(self, client: redis.Redis, *, group_id: str, job_id: str, role: str | None = None,
                 timeout: float | None = None, cancel: threading.Event | None = None) -> None:
        self.client = client
        self.group_id = group_id
        self.job_id = job_id
        self.role = role
        self.timeout = timeout
        self.cancel = cancel

    # --- the API -------------------------------------------------------------------
    def call(self, prog: str, argv: Sequence[str], *, device_ip: str | None = None,
             interfaces: Mapping[str, Any] | None = None, timeout: float | None = None,
             stop: Callable[[], str | None] | None = None) -> RelayReply:
        """Run one ``lava-*`` call as this member; never raises.

        ``device_ip``: the caller's ``DEVICE_IP``; ``interfaces``: {name: the
        facts ``lava-network broadcast`` sends} as the caller sees them;
        ``timeout``: the caller's own default wait (else the member's, else
        the group's); ``stop()`` returning a reason ends a blocked wait (exit 1),
        as the relay's ``cancel`` event does."""
        try:
            call = mn_args.parse(prog, argv, device_ip=device_ip)
            return self._run(call, device_ip, interfaces, timeout, stop)
        except mn_args.Help:
            return RelayReply(0, stdout=f"usage: {mn_args.USAGE[prog]}\n")
        except MultiNodeUsageError as exc:
            usage = f"usage: {mn_args.USAGE[prog]}\n" if prog in mn_args.USAGE else ""
            return RelayReply(exc.exit_code, stderr=f"{prog}: {exc}\n{usage}")
        except ConvoyError as exc:
            return RelayReply(exc.exit_code, stderr=f"{prog}: {exc}\n")
        except Exception as exc:
            log.exception("MultiNode call %s of job %s failed", prog, self.job_id)
            return RelayReply(1, stderr=f"{prog}: error: {type(exc).__name__}: {exc}\n")

    # --- one call --------------------------------------------------------------------
    def _deadline(self, timeout: float | None) -> float:
        """When a call that does not wait gives up reconnecting to Redis."""
        import time

        own = timeout if timeout is not None else self.timeout
        return time.monotonic() + (own if own is not None else store.CONNECT_BUDGET)

    def _stopper(self, stop: Callable[[], str | None] | None) -> Callable[[], str | None]:
        def stopped() -> str | None:
            if self.cancel is not None and self.cancel.is_set():
                return "the job's test was stopped"
            return stop() if stop is not None else None
        return stopped

    def _recorded(self, name: str, message_id: str, wait: Callable[[], store.Received]) -> store.Received:
        """Run a wait and log a failure as an API call (the store logs a pass with the release)."""
        try:
            return wait()
        except ConvoyError as exc:
            detail = str(exc)
            if isinstance(exc, GroupMemberFailed):
                exc.args = (f"{exc}; stopped waiting for {message_id!r}",)
            if not isinstance(exc, ServiceUnavailable):
                import time

                with contextlib.suppress(Exception):  # best effort: the wait's own error is what matters
                    store.record_call(self.client, self.group_id, self.job_id, name, "fail", detail,
                                      deadline=time.monotonic() + 2.0)
            raise

    def _run(self, call: mn_args.Call, device_ip: str | None, interfaces: Mapping[str, Any] | None,
             timeout: float | None, stop: Callable[[], str | None] | None) -> RelayReply:
        act, g, job = call.action, self.group_id, self.job_id
        wait_timeout = call.timeout if call.timeout is not None else (timeout if timeout is not None
                                                                      else self.timeout)
        stopped = self._stopper(stop)
        if act == "send":
            store.send(self.client, g, job, call.message_id, call.data, deadline=self._deadline(timeout))
            return RelayReply(0)
        if act in ("wait", "wait-all", "network-collect"):
            name = {"wait": f"multinode-wait-{call.message_id}", "wait-all": f"multinode-wait-all-{call.message_id}",
                    "network-collect": "multinode-network-collect"}[act]
            if act == "wait":
                def wait() -> store.Received:
                    return store.wait_any(self.client, g, call.message_id, timeout=wait_timeout,
                                          record=(job, name), stop=stopped)
            else:
                def wait() -> store.Received:
                    return store.wait_all(self.client, g, call.message_id, call.role, timeout=wait_timeout,
                                          record=(job, name), stop=stopped)
            received = self._recorded(name, call.message_id, wait)
            if act == "wait":
                return RelayReply(0, cache=cachefile.wait_lines(received))
            if act == "wait-all":
                return RelayReply(0, cache=cachefile.wait_all_lines(received))
            return RelayReply(0, network_cache=cachefile.wait_all_lines(received))
        if act == "sync":
            name = f"multinode-sync-{call.message_id}"
            received = self._recorded(name, call.message_id, lambda: store.sync(
                self.client, g, job, call.message_id, timeout=wait_timeout, record=name, stop=stopped))
            return RelayReply(0, cache=cachefile.wait_all_lines(received))
        if act == "self":
            return RelayReply(0, stdout=f"{job}\n")
        if act == "role" and self.role:
            return RelayReply(0, stdout=f"{self.role}\n")
        if act == "echo-ipv4":
            address = mn_args.echo_ipv4(call.iface or "", device_ip, interfaces)
            if not address:
                raise ConvoyError(f"no IPv4 address on interface {call.iface!r}")
            return RelayReply(0, stdout=f"{address}\n")
        if act == "network-broadcast":
            info = _broadcast_info(call.iface or "", device_ip, interfaces)
            store.send(self.client, g, job, call.message_id, info, deadline=self._deadline(timeout))
            return RelayReply(0)
        deadline = self._deadline(timeout)
        if act == "network-query":
            data = store.read_message(self.client, g, mn_args.NETWORK_MESSAGE, deadline=deadline).get(call.job)
            if data is None:
                raise ConvoyError(f"no network data from {call.job!r} (has it run 'lava-network broadcast'?)")
            value = data.get(call.field, data.get(call.field.lower()))
            if value is None:
                raise ConvoyError(f"{call.job!r} broadcast no {call.field!r} (it sent: {', '.join(data)})")
            return RelayReply(0, stdout=f"{value}\n")
        group = store.load_group(self.client, g, deadline=deadline)
        if act == "network-hosts":
            received = store.read_message(self.client, g, mn_args.NETWORK_MESSAGE, deadline=deadline)
            lines = _hosts_lines(group, received, call.aliases)
            if call.file:
                return RelayReply(0, append_file=call.file, append_lines=lines)
            return RelayReply(0, stdout=_lines(lines))
        if act == "group":
            if call.role is None:
                return RelayReply(0, stdout=_lines([f"{j}\t{r}" for j, r in group.members]))
            jobs = [j for j, r in group.members if r == call.role]
            return RelayReply(0 if jobs else 1, stdout=_lines(jobs))
        if act == "role-list":
            return RelayReply(0, stdout=_lines(group.roles()))
        if act == "role":
            role = group.role_of(job)
            if role is None:
                raise ConvoyError(f"job {job!r} is not a member of MultiNode group {g!r}")
            return RelayReply(0, stdout=f"{role}\n")
        raise MultiNodeUsageError(f"unknown call {act!r}")

    # --- the socket ------------------------------------------------------------------
    def serve(self, path: Path) -> RelayServer:
        """A server for this relay at ``path`` (use as a context manager: started on enter, stopped on exit)."""
        return RelayServer(self, path)


def _broadcast_info(iface: str, device_ip: str | None, interfaces: Mapping[str, Any] | None) -> dict[str, str]:
    """What ``lava-network broadcast`` sends: the caller's facts for ``iface`` (``DEVICE_IP`` as ipv4)."""
    given = (interfaces or {}).get(iface)
    info = {str(k): v for k, v in given.items() if isinstance(v, str)} if isinstance(given, dict) else {}
    if device_ip:
        info["ipv4"] = device_ip
    if "ipv4" not in info:
        raise ConvoyError(f"no IPv4 address on interface {iface!r}")
    return mn_args.check_data(info)


def _hosts_lines(group: store.Group, received: store.Received, aliases: bool) -> list[str]:
    lines: list[str] = []
    counts: dict[str, int] = {}
    for job, role in group.members:
        counts[role] = counts.get(role, 0) + 1
        ipv4 = received.get(job, {}).get("ipv4")
        if ipv4:
            lines.append(f"{ipv4}\t{job}" + (f"\t{role}{counts[role]:02d}" if aliases else ""))
    return lines


# --- the per-job socket ------------------------------------------------------------
class RelayServer:
    """A unix socket serving one relay: one thread per connection, one request and one reply each.

    The socket lives in a directory of its own (mode 0700; the socket 0600) in
    the job's directory, or in ``/tmp`` when that path is too long for a
    socket.  Stopping it ends every call still waiting (exit 1)."""

    def __init__(self, relay: MultiNodeRelay, path: Path) -> None:
        self.relay = relay
        self.requested = Path(path)
        self.path = self.requested
        self._own_dir: Path | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> RelayServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """What a test command needs to reach this relay."""
        return {SOCKET_ENV: str(self.path)}

    def start(self) -> None:
        if len(os.fsencode(self.requested)) > MAX_SOCKET_PATH:
            self._own_dir = Path(tempfile.mkdtemp(prefix="convoy-mn-"))  # 0700
            self.path = self._own_dir / "relay.sock"
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path.parent, 0o700)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a socket left by a worker that died
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, name=f"mn-relay-{self.relay.job_id[:8]}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening, end the calls in progress (their waits exit 1) and remove the socket."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._thread is not None:
            self._thread.join(5.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            with self._lock:
                full = len(self._conns) >= MAX_CONNECTIONS
                if not full:
                    self._conns.add(conn)
            if full:
                _reply(conn, RelayReply(1, stderr=f"too many MultiNode calls at once (over {MAX_CONNECTIONS})\n"))
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="mn-relay-call", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            reply = self._answer(conn)
            _reply(conn, reply)
        except Exception:
            log.exception("MultiNode relay of job %s: a connection failed", self.relay.job_id)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, conn: socket.socket) -> RelayReply:
        conn.settimeout(REQUEST_SECONDS)
        try:
            line = _read_line(conn)
        except (TimeoutError, OSError) as exc:
            return RelayReply(2, stderr=f"lava: malformed MultiNode request: {exc}\n")
        if line is None:
            return RelayReply(2, stderr=f"lava: malformed MultiNode request: over {MAX_REQUEST} bytes or "
                                        "not one line of JSON\n")
        request = _request(line)
        if isinstance(request, RelayReply):
            return request
        conn.settimeout(None)

        def gone() -> str | None:
            if self._stopping.is_set():
                return "the job's test has ended"
            return None if _alive(conn) else "the command that asked has gone"

        return self.relay.call(request["prog"], request["argv"], device_ip=request.get("device_ip"),
                               interfaces=request.get("interfaces"), timeout=request.get("timeout"), stop=gone)


def _read_line(conn: socket.socket) -> bytes | None:
    """One request line (without the newline), or None if it is too long or the client hung up first."""
    buf = bytearray()
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        end = chunk.find(b"\n")
        if end >= 0:
            buf += chunk[:end]
            return bytes(buf) if len(buf) <= MAX_REQUEST else None
        buf += chunk
        if len(buf) > MAX_REQUEST:
            return None


def _request(line: bytes) -> dict[str, Any] | RelayReply:
    """The checked request, or a refusal (exit 2) saying what is wrong with it."""
    def bad(why: str) -> RelayReply:
        return RelayReply(2, stderr=f"lava: malformed MultiNode request: {why}\n")

    try:
        req = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return bad(f"not JSON ({exc})")
    if not isinstance(req, dict):
        return bad("not a JSON object")
    if not isinstance(req.get("prog"), str):
        return bad("'prog' must be a command name")
    argv = req.get("argv", [])
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        return bad("'argv' must be a list of strings")
    if req.get("device_ip") is not None and not isinstance(req["device_ip"], str):
        return bad("'device_ip' must be a string")
    interfaces = req.get("interfaces")
    if interfaces is not None and not (isinstance(interfaces, dict)
                                       and all(isinstance(v, dict) for v in interfaces.values())):
        return bad("'interfaces' must map interface names to objects")
    timeout = req.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout < float("inf")):
        return bad("'timeout' must be a positive number of seconds")
    return {"prog": req["prog"], "argv": argv, "device_ip": req.get("device_ip") or None,
            "interfaces": interfaces, "timeout": float(timeout) if timeout is not None else None}


def _alive(conn: socket.socket) -> bool:
    """False once the client has hung up (a killed ``lava-wait``)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _reply(conn: socket.socket, reply: RelayReply) -> None:
    with contextlib.suppress(OSError):  # the client may have gone: nothing to tell
        conn.settimeout(REQUEST_SECONDS)
        conn.sendall(reply.to_json().encode("utf-8", "surrogateescape") + b"\n")


@contextlib.contextmanager
def relay_env(client: redis.Redis, job_dir: Path, *, group_id: str | None, job_id: str, role: str | None,
              timeout: float | None, cancel: threading.Event | None) -> Iterator[dict[str, str]]:
    """Around a group member's test commands: its relay's socket served, and the env entry naming it.

    Not in a group: nothing served, no entry."""
    if not group_id:
        yield {}
        return
    relay = MultiNodeRelay(client, group_id=group_id, job_id=job_id, role=role, timeout=timeout, cancel=cancel)
    with relay.serve(job_dir / ".multinode" / "relay.sock") as server:
        yield server.env()
