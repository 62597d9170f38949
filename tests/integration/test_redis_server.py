"""The embedded Redis (``convoy run``, the tests) has a password: nothing on the host without the URL (a job's
commands) can use it, and the password is neither on the server's command line nor in a file others read."""
from __future__ import annotations

from pathlib import Path

import pytest
import redis as redis_lib

from convoy.workers.embedded.redis_server import RedisServer

pytestmark = pytest.mark.integration


def test_the_embedded_redis_refuses_a_client_without_its_password(tmp_path: Path):
    with RedisServer(tmp_path / "redis") as server:
        assert server.password and f":{server.password}@" in server.url
        assert redis_lib.Redis.from_url(server.url).set("k", "v")
        for anonymous in (redis_lib.Redis(port=server.port, protocol=2),
                          redis_lib.Redis(port=server.port, password="guess", protocol=2)):
            with pytest.raises((redis_lib.AuthenticationError, redis_lib.ResponseError)):
                anonymous.set("k", "forged")
        assert redis_lib.Redis.from_url(server.url).get("k") == b"v"
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()
        assert server.password not in cmdline
        conf = tmp_path / "redis" / "redis.conf"
        assert server.password in conf.read_text() and (conf.stat().st_mode & 0o777) == 0o600


def test_a_restart_keeps_the_password_and_the_data(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", password="given-pw").start()
    try:
        redis_lib.Redis.from_url(server.url).set("k", "v")
        server = server.restart()
        assert redis_lib.Redis.from_url(server.url).get("k") == b"v"
        assert server.url == f"redis://:given-pw@127.0.0.1:{server.port}/0"
    finally:
        server.stop()
