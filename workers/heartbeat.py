"""Heartbeats: a worker's alive mark renewed from a daemon thread while the worker lives.

``convoy agents`` and ``convoy queue-status`` read a device's mark to tell
online, busy and offline devices apart (:mod:`convoy.coordinator.state.presence`).
The same beat renews a device worker's lock
(:mod:`convoy.coordinator.state.leases`) and, every so often, removes this
host's old job directories (:mod:`convoy.workers.retention`: every worker
process on every host beats, so every host cleans its own).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from convoy.coordinator.state.leases import DeviceLock, renew_held
from convoy.coordinator.state.presence import AliveMark
from convoy.workers.retention import JobDirRetention

log = logging.getLogger(__name__)

#: well inside the mark's TTL (``presence.ALIVE_TTL_SECONDS``): two beats may be missed
BEAT_SECONDS = 5.0


class Heartbeat:
    """Renews an alive mark (and a device worker's lock) from a daemon thread until stopped.

    With a ``lock``, every beat renews the lease first; if another worker
    holds it now, ``on_lost`` is called — this process must stop serving.
    Every beat also renews the step leases this process holds (a coordinator
    running parent steps) and calls ``on_beat`` (a device worker checks that
    Redis still knows its device: an emptied Redis forgot it).
    """

    def __init__(self, client: redis.Redis, mark: AliveMark, *,
                 lock: DeviceLock | None = None, on_lost: Callable[[], None] | None = None,
                 on_beat: Callable[[], None] | None = None, retention: JobDirRetention | None = None) -> None:
        self.client = client
        #: this host's job directories' retention (None: from the settings, at the first beat)
        self.retention = retention
        self.mark = mark
        self.lock = lock
        self.on_lost = on_lost
        self.on_beat = on_beat
        self._alive = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{mark.name}", daemon=True)

    def start(self, alive: bool = True) -> Heartbeat:
        """Start beating; ``alive=False`` renews only the lock until :meth:`announce`."""
        if alive:
            self.announce()
        self._thread.start()
        return self

    def announce(self) -> None:
        """From now on the worker shows alive (it consumes)."""
        self.mark.set(self.client)
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
                self.mark.set(self.client)
            renew_held()
            if self._alive and self.on_beat is not None:
                self.on_beat()
            if self._alive:
                self.retention = self.retention or JobDirRetention.from_settings()
                self.retention.maybe_sweep()
        except redis.RedisError:
            pass  # Redis is back soon or the device shows offline: both are right
        except Exception:  # the beat must go on whatever one check does
            log.exception("heartbeat of %s", self.mark.name)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.mark.clear(self.client)
            if self.lock is not None:
                self.lock.release()
        except redis.RedisError:
            pass
