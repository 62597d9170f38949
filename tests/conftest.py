"""Shared fixtures: a private Redis for the whole session, a clean db per test, embedded clusters.

``CONVOY_TEST_REDIS_URL`` points the tests at another Redis instead.  Every
cluster of the session (integration and fault tests) uses database 1 of the
session's Redis: the Celery app reads its broker URL once per process, and
the unit tests flush database 0.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis as redis_lib

from convoy.config.devices import DeviceConfig
from convoy.coordinator.state.presence import AliveMark, missing
from convoy.workers.embedded.cluster import EmbeddedCluster, emulated_devices
from convoy.workers.embedded.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    url = os.environ.get("CONVOY_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def cluster_redis_url(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + "/1"
    redis_lib.Redis.from_url(url).flushdb()
    os.environ["CONVOY_REDIS_URL"] = url
    return url


@pytest.fixture
def start_cluster(cluster_redis_url: str, tmp_path: Path) -> Iterator[Callable[..., EmbeddedCluster]]:
    """Start an embedded cluster: ``start_cluster({"queue": count}, **device_config)``."""
    started: list[EmbeddedCluster] = []

    def start(queues: dict[str, int] | None = None, devices: list[DeviceConfig] | None = None,
              coordinator: bool = True, **device_config: object) -> EmbeddedCluster:
        chosen = devices if devices is not None else emulated_devices(
            queues or {}, prefix=f"t{len(started)}-{os.getpid()}", extra_config=device_config or None)
        cluster = EmbeddedCluster(tmp_path / f"cluster{len(started)}", chosen, redis_url=cluster_redis_url,
                                  coordinator=coordinator, log=lambda m: print(f"[cluster] {m}"))
        cluster.start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def coordinator_process(cluster_redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A ``convoy coordinator`` process (the scheduler and parent steps), for tests that start workers by hand."""
    env = {**os.environ, "CONVOY_REDIS_URL": cluster_redis_url, "CONVOY_STATE_DIR": str(tmp_path / "coordinator")}
    with (tmp_path / "coordinator.log").open("ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "convoy"), "coordinator"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    client = redis_lib.Redis.from_url(cluster_redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + 60
        while missing(client, [AliveMark.of_coordinator()]):
            assert proc.poll() is None and time.monotonic() < deadline, \
                f"the coordinator did not come up: {(tmp_path / 'coordinator.log').read_text()[-2000:]}"
            time.sleep(0.1)
        yield proc
    finally:
        client.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
