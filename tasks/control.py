"""Signals to a running job (cancel, test, release), delivered without polling.

Signals are entries of the job's control stream.  A watcher thread blocks on
``XREAD`` from the stream's start, so a signal sent before the task began is
seen as surely as one sent later; the task waits on threading events.
"""
from __future__ import annotations

import threading
import time

import redis

from convoy.coordinator import keys

SIGNALS = ("cancel", "test", "release", "start")


class ControlWatcher:
    """Collects a job's control signals in a background thread."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        # a connection of its own: XREAD BLOCK holds it; ``client`` unblocks it at exit
        self._main = client
        self._client = redis.Redis(single_connection_client=True, connection_pool=redis.ConnectionPool(
            connection_class=client.connection_pool.connection_class,
            **client.connection_pool.connection_kwargs))
        self._connection_id: int | None = None
        self._started = threading.Event()
        self.job_id = job_id
        self._events = {name: threading.Event() for name in SIGNALS}
        self._any = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"control-{job_id[:8]}", daemon=True)
        self._callbacks: list = []

    def __enter__(self) -> "ControlWatcher":
        self._thread.start()
        self._started.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._connection_id is not None:
            try:  # end the blocking read now instead of at its timeout
                self._main.client_unblock(self._connection_id)
            except redis.RedisError:
                pass
        self._thread.join(timeout=3)
        self._client.close()

    def on_signal(self, callback) -> None:
        """Call ``callback(name)`` from the watcher thread for every signal."""
        self._callbacks.append(callback)

    def _run(self) -> None:
        last = "0-0"
        stream = keys.job_control(self.job_id)
        try:
            self._connection_id = self._client.client_id()
        except redis.RedisError:
            pass  # no id: exit waits for the read's timeout instead
        finally:
            self._started.set()
        while not self._stop.is_set():
            try:
                result = self._client.xread({stream: last}, block=5000)
            except redis.RedisError:
                self._stop.wait(0.5)  # Redis went away: reconnect after a short pause
                continue
            for _, entries in result or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._deliver(fields.get(b"signal", fields.get("signal", b"")))

    def _deliver(self, raw: bytes | str) -> None:
        name = raw.decode() if isinstance(raw, bytes) else raw
        if name not in self._events:
            return
        self._events[name].set()
        for callback in self._callbacks:
            callback(name)
        with self._any:
            self._any.notify_all()

    def clear(self, name: str) -> None:
        """Forget ``name`` so that the next such signal is waited for afresh."""
        self._events[name].clear()

    def received(self, name: str) -> bool:
        return self._events[name].is_set()

    @property
    def cancel_event(self) -> threading.Event:
        return self._events["cancel"]

    def wait_any(self, names: tuple[str, ...], timeout: float | None = None) -> str | None:
        """Block until one of ``names`` was received; return it (None on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._any:
            while True:
                for name in names:
                    if self._events[name].is_set():
                        return name
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._any.wait(remaining)
