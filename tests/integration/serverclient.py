"""A real ``convoy server`` process for tests, and a small JSON client for it (standard library HTTP).

``start_server`` runs ``convoy server`` on a free loopback port against the test's Redis (the environment's
``CONVOY_REDIS_URL``) and stops it after; ``add_client`` makes a client with the real ``convoy clients add``.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import CONVOY, wait_for


class Server:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def login(self, client_id: str, secret: str) -> dict[str, Any]:
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        status, tokens = self.call("POST", "/v1/oauth2/token", headers={"Authorization": f"Basic {basic}"})
        assert status == 200, tokens
        return tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def add_client(*args: str) -> str:
    """``convoy clients add ARGS``; the printed secret."""
    done = subprocess.run([CONVOY, "clients", "add", *args], capture_output=True, text=True, timeout=30,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    return lines["secret"]


def start_server(tmp_path: Path, *extra: str) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([CONVOY, "server", "--port", str(port), *extra], stdout=out,
                                stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}")

    def up() -> bool:
        assert proc.poll() is None, f"convoy server exited: {log.read_text()[-2000:]}"
        try:
            return server.call("GET", "/")[0] == 200
        except OSError:
            return False

    try:
        wait_for(up, 30, "convoy server answering")
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
