"""Integration fixtures: embedded clusters of real worker processes and real SSH devices.

Every cluster of the session uses database 1 of the session's Redis: the
Celery app reads its broker URL once per process, and the unit tests flush
database 0.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis as redis_lib

from convoy.connectors.base import DeviceConfig
from convoy.workers.cluster import EmbeddedCluster, emulated_devices


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
