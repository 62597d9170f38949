"""The farm's control socket per device: how the device's worker "reboots" it.

The farm owns the sandboxes; the connector runs in the device's worker, a
different process on the same host.  The farm listens on
``<state_dir>/devices/<name>/control.sock`` (mode 0600: root's, like the
state directory) and answers one JSON line per request line:

* ``info``: ``{"ok": true, "address", "port", "sandboxed"}``;
* ``reboot``: the same after restarting the device's sandbox, plus
  ``"ended"`` (how many processes the reboot ended).

A missing socket, or one nobody listens on (a farm killed with SIGKILL),
means no farm serves the device here: :func:`call` returns None.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"
#: sun_path holds 108 bytes; longer paths are reached through /proc/self/fd/<dir fd>/
_MAX_PATH = 100


@contextlib.contextmanager
def _short(path: Path) -> Iterator[str]:
    """A path to ``path`` that fits in a unix socket address (through an open fd of its directory)."""
    if len(os.fsencode(str(path))) <= _MAX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def call(path: Path, command: str, timeout: float = 60.0) -> dict[str, Any] | None:
    """Send ``command``; the farm's reply, or None if no farm listens on ``path``."""
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with _short(path) as address:
                sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        sock.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data or b"{}")
    return reply


Handler = Callable[[str], Awaitable[dict[str, Any]]]


async def serve(path: Path, handler: Handler) -> asyncio.AbstractServer:
    """Listen on ``path`` (0600) and answer each request line with ``handler(line)`` as JSON."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := (await reader.readline()).decode(errors="replace").strip():
                try:
                    reply = await handler(line)
                except Exception as exc:  # noqa: BLE001 - reported to the caller, who names the device
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with _short(path) as address:
        server = await asyncio.start_unix_server(session, path=address)
    os.chmod(path, 0o600)
    return server
