"""A loopback SSH key server speaking the GitHub and Launchpad key URL formats.

``/gh/<user>.keys`` and ``/lp/<user>/+sshkeys`` answer with the keys given
for ``("gh", user)`` / ``("lp", user)``, 404 for anyone else.  Point convoy
at it with the environment :meth:`KeyServer.env` returns::

    with KeyServer({("gh", "alice"): "ssh-ed25519 AAAA... alice@x\\n"}) as server:
        os.environ.update(server.env())   # before the coordinator starts
        server.fail("gh", "alice", times=2)   # the next two requests get a 500

From a shell (e.g. to try a reservation by hand)::

    python tests/keyserver.py gh:alice=~/.ssh/id_ed25519.pub lp:bob=bob.pub

prints the two ``export CONVOY_..._KEYS_URL=...`` lines and serves until Ctrl-C.
"""
from __future__ import annotations

import re
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

_PATHS = (("gh", re.compile(r"^/gh/([^/]+)\.keys$")), ("lp", re.compile(r"^/lp/([^/]+)/\+sshkeys$")))


class KeyServer:
    """An ``http.server`` on 127.0.0.1 (or ``host``; a free port) in a background thread."""

    def __init__(self, keys: dict[tuple[str, str], str] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self._keys: dict[tuple[str, str], str] = dict(keys or {})
        self._failures: dict[tuple[str, str], list[int]] = {}
        self._lock = threading.Lock()
        #: requests answered, per (service, user) (unknown paths under ("?", path))
        self.hits: Counter[tuple[str, str]] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- what it serves ---------------------------------------------------------
    def set_keys(self, service: str, user: str, text: str) -> None:
        """Serve ``text`` (verbatim) for ``service:user``."""
        with self._lock:
            self._keys[(service, user)] = text

    def fail(self, service: str, user: str, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` requests for ``service:user`` with ``status``.

        ``status=0`` drops the connection without an answer (a network error).
        """
        with self._lock:
            self._failures.setdefault((service, user), []).extend([status] * times)

    def _answer(self, path: str) -> tuple[int, str]:
        for service, pattern in _PATHS:
            match = pattern.match(path)
            if match:
                who = (service, unquote(match.group(1)))
                with self._lock:
                    self.hits[who] += 1
                    pending = self._failures.get(who)
                    if pending:
                        return pending.pop(0), "server error\n"
                    if who in self._keys:
                        return 200, self._keys[who]
                return 404, "Not Found\n"
        with self._lock:
            self.hits[("?", path)] += 1
        return 404, "Not Found\n"

    # --- where -------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "the key server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def github_template(self) -> str:
        return f"{self.url}/gh/{{user}}.keys"

    @property
    def launchpad_template(self) -> str:
        return f"{self.url}/lp/{{user}}/+sshkeys"

    def env(self) -> dict[str, str]:
        """The settings that point convoy at this server."""
        return {"CONVOY_GITHUB_KEYS_URL": self.github_template,
                "CONVOY_LAUNCHPAD_KEYS_URL": self.launchpad_template}

    # --- life ----------------------------------------------------------------------
    def start(self) -> "KeyServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status, body = owner._answer(self.path.split("?", 1)[0])
                if status == 0:
                    self.close_connection = True  # no answer at all: the client sees the connection drop
                    return
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="keyserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "KeyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    keys: dict[tuple[str, str], str] = {}
    for arg in argv:
        key_id, sep, path = arg.partition("=")
        service, colon, user = key_id.partition(":")
        if not sep or not colon or service not in ("gh", "lp"):
            print(f"usage: keyserver.py gh:USER=PUBKEY_FILE|lp:USER=PUBKEY_FILE ... (bad: {arg!r})", file=sys.stderr)
            return 2
        keys[(service, user)] = Path(path).expanduser().read_text()
    with KeyServer(keys) as server:
        for name, value in server.env().items():
            print(f"export {name}='{value}'", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
