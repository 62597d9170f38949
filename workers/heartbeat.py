"""Device heartbeats: a key with a TTL that exists while the device's worker lives.

``convoy agents`` and ``convoy queue-status`` read these to tell online,
busy and offline devices apart.  The same beat renews the worker's device
lock (:mod:`convoy.coordinator.state.leases`).
"""
from __future__ import annotations

import os
import threading
from typing import Callable

import redis

from convoy.config.devices import DeviceConfig
from convoy.coordinator.state import keys
from convoy.coordinator.state.jobs import now_iso
from convoy.coordinator.state.leases import DeviceLock

BEAT_SECONDS = 5.0
ALIVE_TTL_SECONDS = 15


def register_device(client: redis.Redis, device: DeviceConfig, host: str) -> None:
    """Record the device and its queues so jobs for them are accepted and listed."""
    pipe = client.pipeline()
    pipe.sadd(keys.DEVICES, device.name)
    for queue in device.queues:
        pipe.sadd(keys.QUEUES, queue)
    pipe.hset(keys.device(device.name), mapping={
        "name": device.name, "queues": ",".join(device.queues), "connector": device.connector,
        "host": host, "pid": os.getpid(), "started_at": now_iso(),
    })
    pipe.hsetnx(keys.device(device.name), "state", "idle")
    pipe.set(keys.device_alive(device.name), now_iso(), ex=ALIVE_TTL_SECONDS)
    pipe.execute()


class Heartbeat:
    """Refreshes a device's alive key (and renews its worker lock) from a daemon thread until stopped.

    With a ``lock``, every beat renews the lease first; if another worker
    holds it now, ``on_lost`` is called — this process must stop serving.
    """

    def __init__(self, client: redis.Redis, device: str, key: str | None = None, *,
                 lock: DeviceLock | None = None, on_lost: Callable[[], None] | None = None) -> None:
        self.client = client
        self.device = device
        self.key = key or keys.device_alive(device)
        self.lock = lock
        self.on_lost = on_lost
        self._alive = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{device}", daemon=True)

    def start(self, alive: bool = True) -> "Heartbeat":
        """Start beating; ``alive=False`` renews only the lock until :meth:`announce`."""
        if alive:
            self.announce()
        self._thread.start()
        return self

    def announce(self) -> None:
        """From now on the device shows alive (its worker consumes)."""
        self.client.set(self.key, now_iso(), ex=ALIVE_TTL_SECONDS)
        self._alive = True

    def _run(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            self.beat()

    def beat(self) -> None:
        try:
            if self.lock is not None and not self.lock.renew():
                if self.on_lost is not None:
                    self.on_lost()
                return
            if self._alive:
                self.client.set(self.key, now_iso(), ex=ALIVE_TTL_SECONDS)
        except redis.RedisError:
            pass  # Redis is back soon or the device shows offline: both are right

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.delete(self.key)
            if self.lock is not None:
                self.lock.release()
        except redis.RedisError:
            pass
