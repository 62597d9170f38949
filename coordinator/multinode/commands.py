"""The ``lava-*`` console scripts: LAVA's MultiNode API, asked of this job's convoy worker.

Each command is a short-lived process and a thin client: it checks its
arguments (``args.py``), sends the call over the unix socket named by
``CONVOY_MULTINODE_SOCKET`` to the relay of the process that runs this job
(``tasks/run/relay.py``), prints the reply's output, writes LAVA's cache files
here, and exits with the reply's code.  It never talks to Redis and imports
only the standard library and convoy's cheap modules (the ``lava-commands``
import-linter contract).

Environment, set by the runner for every test command of a group member:
``CONVOY_MULTINODE_SOCKET``, optional ``DEVICE_IP``, ``CONVOY_MULTINODE_CACHE``
(default ``/tmp/lava_multi_node_cache.txt``), ``CONVOY_MULTINODE_NETWORK_CACHE``
(default ``/tmp/lava_multi_node_network_cache.txt``),
``CONVOY_MULTINODE_TIMEOUT`` (seconds; else the member's, else the group's).
``lava-echo-ipv4`` and ``lava-network broadcast`` read this host's interface
facts here and send them with the call.

Exit codes: 0 done; 1 failed (timeout, a member failed, Redis unreachable, the
worker unreachable or gone mid-wait); 2 malformed call (usage on stderr),
including a message id, key, value or role that is not UTF-8 text.  Never a
traceback (``CONVOY_DEBUG=1`` shows one for an internal error).
"""
from __future__ import annotations

import os
import sys

from convoy.coordinator.multinode import cachefile
from convoy.coordinator.multinode.args import USAGE, Help, echo_ipv4, parse, seconds
from convoy.errors import ConvoyError, MultiNodeUsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from collections.abc import Sequence
    from typing import Any

SOCKET_ENV = "CONVOY_MULTINODE_SOCKET"
#: largest reply read (every sender's data of one message, at most 64 KiB each)
MAX_REPLY = 64 * 1024 * 1024


def _out(text: str, stream: Any = None) -> None:
    """Text to stdout (or ``stream``) as UTF-8 whatever the locale (an ASCII locale must not fail on a value)."""
    stream = sys.stdout if stream is None else stream
    if text:
        buffer = getattr(stream, "buffer", None)
        if buffer is None:  # a text stream without bytes underneath (called in-process)
            stream.write(text)
        else:
            stream.flush()
            buffer.write(text.encode("utf-8", "surrogateescape"))
    stream.flush()


def ask(request: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """Send one request to this job's relay and return its reply (``ConvoyError`` if the worker is not there)."""
    import json
    import socket

    path = os.environ.get(SOCKET_ENV, "") if path is None else path
    if not path:
        raise ConvoyError(f"cannot reach this job's convoy worker ({SOCKET_ENV} not set: MultiNode commands run "
                          "inside a convoy MultiNode test job)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ConvoyError(f"cannot reach this job's convoy worker ({SOCKET_ENV}={path}): "
                              f"{exc.strerror or exc}") from None
        sock.sendall(json.dumps(request).encode("ascii") + b"\n")
        chunks: list[bytes] = []
        size = 0
        lost: OSError | None = None
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError as exc:
                chunk, lost = b"", exc
            else:
                lost = None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if chunk.endswith(b"\n") or size > MAX_REPLY:
                break
    finally:
        sock.close()
    data = b"".join(chunks)
    if not data.endswith(b"\n"):
        why = f": {lost.strerror or lost}" if lost else ""
        raise ConvoyError(f"lost the connection to this job's convoy worker before it answered "
                          f"(the worker stopped or restarted{why})")
    reply = json.loads(data)
    if not isinstance(reply, dict) or not isinstance(reply.get("code"), int):
        raise ConvoyError("this job's convoy worker gave a reply that is not one")
    return reply


def _interfaces(iface: str | None, device_ip: str | None) -> dict[str, dict[str, str]]:
    from convoy.coordinator.multinode import network

    return {iface or "": network.interface_info(iface or "", device_ip)}


def _run(prog: str, argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    device_ip = os.environ.get("DEVICE_IP") or None
    call = parse(prog, args, device_ip=device_ip)  # refused here before anything is sent
    if call.action == "echo-ipv4":  # this host's own fact: no group needed
        from convoy.coordinator.multinode import network

        address = echo_ipv4(call.iface or "", device_ip, None) or network.interface_ipv4(call.iface or "")
        if not address:
            raise ConvoyError(f"no IPv4 address on interface {call.iface!r}")
        _out(address + "\n")
        return 0
    request: dict[str, Any] = {"prog": prog, "argv": args, "device_ip": device_ip}
    if call.action == "network-broadcast":
        request["interfaces"] = _interfaces(call.iface, device_ip)
    raw = os.environ.get("CONVOY_MULTINODE_TIMEOUT", "")
    if raw:
        request["timeout"] = seconds(raw, "CONVOY_MULTINODE_TIMEOUT")
    reply = ask(request)
    if reply.get("cache") is not None:
        cachefile.write(os.environ.get("CONVOY_MULTINODE_CACHE") or cachefile.DEFAULT_CACHE, reply["cache"])
    if reply.get("network_cache") is not None:
        cachefile.write(os.environ.get("CONVOY_MULTINODE_NETWORK_CACHE") or cachefile.DEFAULT_NETWORK_CACHE,
                        reply["network_cache"])
    if reply.get("append_file"):
        with open(reply["append_file"], "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in reply.get("append_lines") or []))
    _out(reply.get("stdout") or "")
    if reply.get("stderr"):
        _out(reply["stderr"], sys.stderr)
    return int(reply["code"])


def _main(prog: str, argv: Sequence[str] | None) -> int:
    code = _guarded(prog, argv)
    if argv is None:  # a console script: this process is ours alone
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Flush and leave without interpreter teardown (N members end at once)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)


def _guarded(prog: str, argv: Sequence[str] | None) -> int:
    try:
        return _run(prog, argv)
    except Help:
        _out(f"usage: {USAGE[prog]}\n")
        return 0
    except MultiNodeUsageError as exc:
        sys.stderr.write(f"{prog}: {exc}\nusage: {USAGE[prog]}\n")
        return exc.exit_code
    except ConvoyError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - a command never dies with a traceback
        if os.environ.get("CONVOY_DEBUG"):
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"{prog}: error: {type(exc).__name__}: {exc}\n")
        return 1


def lava_send(argv: Sequence[str] | None = None) -> int:
    """``lava-send <message-id> [key=value ...]``: store this member's data, never blocks."""
    return _main("lava-send", argv)


def lava_wait(argv: Sequence[str] | None = None) -> int:
    """``lava-wait <message-id>``: until any member sent it; ``key=value`` lines to the cache."""
    return _main("lava-wait", argv)


def lava_wait_all(argv: Sequence[str] | None = None) -> int:
    """``lava-wait-all <message-id> [role]``: until all (of role) sent it; ``job:key=value`` lines."""
    return _main("lava-wait-all", argv)


def lava_sync(argv: Sequence[str] | None = None) -> int:
    """``lava-sync <message-id>``: send + wait-all, reusable in a loop."""
    return _main("lava-sync", argv)


def lava_group(argv: Sequence[str] | None = None) -> int:
    """``lava-group [role]``: ``job\\trole`` lines, or the job ids of a role (exit 1 if none)."""
    return _main("lava-group", argv)


def lava_role(argv: Sequence[str] | None = None) -> int:
    """``lava-role [list]``: this member's role, or every role of the group."""
    return _main("lava-role", argv)


def lava_self(argv: Sequence[str] | None = None) -> int:
    """``lava-self``: this member's job id."""
    return _main("lava-self", argv)


def lava_network(argv: Sequence[str] | None = None) -> int:
    """``lava-network broadcast|collect|query|hosts|alias-hosts``: the group's addresses."""
    return _main("lava-network", argv)


def lava_echo_ipv4(argv: Sequence[str] | None = None) -> int:
    """``lava-echo-ipv4 <interface>``: this member's IPv4 address (``DEVICE_IP`` if set)."""
    return _main("lava-echo-ipv4", argv)
