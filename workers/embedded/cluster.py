"""An embedded convoy cluster on this machine: what ``convoy run`` and the tests use.

It starts a private Redis (unless one is named), the emulated device farm,
one device worker per device under a supervisor, and the coordinator
worker; it waits until every one of them is ready and stops them all after.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import redis

from convoy.config.devices import DeviceConfig
from convoy.config.settings import COORDINATOR_QUEUE
from convoy.coordinator.state.connection import make_client
from convoy.coordinator.state.presence import AliveMark, missing
from convoy.errors import ConvoyError
from convoy.workers.embedded.redis_server import RedisServer
from convoy.workers.supervisor import Supervisor, coordinator_command

READY_TIMEOUT_SECONDS = 90.0


def emulated_devices(queues: dict[str, int], *, prefix: str = "emu", extra_config: dict | None = None,
                     tags: Mapping[str, Iterable[str]] | None = None) -> list[DeviceConfig]:
    """Emulated devices, ``count`` per queue, each on its own free loopback address.

    A device made for a queue is also of that ``device_type`` (a LAVA job's roles name types) and
    carries ``tags[queue]``, so the jobs they are made for can select them.
    """
    from convoy.connectors.emulated.addresses import assign_addresses

    return assign_addresses(
        DeviceConfig(name=f"{prefix}-{queue}-{i}", queues=(queue,), connector="emulated",
                     config=dict(extra_config or {}), device_type=queue,
                     tags=tuple(sorted(set((tags or {}).get(queue, ())))))
        for queue, count in queues.items() for i in range(1, count + 1))


class EmbeddedCluster:
    """Redis + device farm + device workers + coordinator, as one context manager."""

    def __init__(self, state_dir: Path, devices: list[DeviceConfig], *, redis_url: str | None = None,
                 coordinator: bool = True, log: Callable[[str], None] = print,
                 configure_process: bool = True, worker_redis_url: str | None = None,
                 coordinator_redis_url: str | None = None) -> None:
        """``worker_redis_url``, ``coordinator_redis_url``: what device workers and the coordinator use
        (their ACL users, ``convoy redis-acl``); default ``redis_url``, which this process uses."""
        self.state_dir = Path(state_dir)
        self.worker_redis_url = worker_redis_url
        self.coordinator_redis_url = coordinator_redis_url
        self.devices = devices
        self.redis_url = redis_url
        self.coordinator = coordinator
        self.log = log
        self.configure_process = configure_process
        self.redis_server: RedisServer | None = None
        self.farm = None
        self.supervisor: Supervisor | None = None
        self.env: dict[str, str] = {}

    def start(self) -> EmbeddedCluster:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if not self.redis_url:
                self.redis_server = RedisServer(self.state_dir / "redis").start()
                self.redis_url = self.redis_server.url
            self.env = {**os.environ, "CONVOY_REDIS_URL": self.redis_url, "CONVOY_STATE_DIR": str(self.state_dir)}
            if self.configure_process:
                os.environ["CONVOY_REDIS_URL"] = self.redis_url
                os.environ["CONVOY_STATE_DIR"] = str(self.state_dir)
            emulated = [d for d in self.devices if d.connector == "emulated"]
            if emulated:
                from convoy.connectors.emulated.farm import DeviceFarm

                self.farm = DeviceFarm(emulated, self.state_dir)
                self.farm.__enter__()
                served = {d.name: d for d in self.farm.devices}  # sandboxed: addresses on the farm's lab
                self.devices = [served.get(d.name, d) for d in self.devices]
            self.supervisor = Supervisor(log=self.log)
            log_dir = self.state_dir / "logs"
            worker_env = {**self.env, "CONVOY_REDIS_URL": self.worker_redis_url or self.redis_url}
            for device in self.devices:
                self.supervisor.add_device(device, log_dir, worker_env)
            if self.coordinator:
                log_dir.mkdir(parents=True, exist_ok=True)
                coordinator_env = {**self.env, "CONVOY_REDIS_URL": self.coordinator_redis_url or self.redis_url}
                self.supervisor.add("coordinator", coordinator_command(COORDINATOR_QUEUE, log_dir / "coordinator.log"),
                                    coordinator_env, output=log_dir / "coordinator.out")
            self.supervisor.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> redis.Redis:
        return make_client(self.redis_url)

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until every device worker and the coordinator announced themselves."""
        client = self.client()
        wanted = [AliveMark.of_device(d.name) for d in self.devices]
        if self.coordinator:
            wanted.append(AliveMark.of_coordinator())
        deadline = time.monotonic() + timeout
        try:
            while True:
                absent = missing(client, wanted)
                if not absent:
                    return
                if time.monotonic() > deadline:
                    raise ConvoyError(f"workers not ready after {timeout:g}s: {', '.join(m.name for m in absent)} "
                                      f"(logs in {self.state_dir / 'logs'})")
                time.sleep(0.05)  # start-up only: workers announce themselves once
        finally:
            client.close()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        if self.farm is not None:
            self.farm.__exit__(None, None, None)
            self.farm = None
        if self.redis_server is not None:
            self.redis_server.stop()
            self.redis_server = None

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
