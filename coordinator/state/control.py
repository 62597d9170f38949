"""Signals to a running job (cancel, test, release), delivered without polling.

Signals are entries of the job's control stream.  A watcher thread blocks on
``XREAD`` from the stream's start, so a signal sent before the task began is
seen as surely as one sent later; the task waits on threading events.

The watcher lives as long as its job phase (hours for a reservation): each
read blocks one slice (below the socket timeout), and a lost connection (a
Redis restart) is retried with back-off for as long as the watcher runs, from
the last signal seen, so no signal is lost or seen twice.
"""
from __future__ import annotations

import logging
import threading
import time

import redis

from convoy.config.lifecycle import Signal
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import BLOCK_SLICE_MS, CONNECTION_ERRORS, dedicated_client, reconnecting

log = logging.getLogger(__name__)

SIGNALS: tuple[Signal, ...] = tuple(Signal)

#: the watchers running in this process, by job: a signal can be delivered here without Redis
_watching: dict[str, set["ControlWatcher"]] = {}
_watching_lock = threading.Lock()


def deliver_here(job_id: str, name: str) -> int:
    """Deliver ``name`` to every watcher of ``job_id`` in this process (Redis forgot the job: stop it
    anyway); how many got it."""
    with _watching_lock:
        watchers = list(_watching.get(job_id, ()))
    for watcher in watchers:
        watcher.deliver(name)
    return len(watchers)


class ControlWatcher:
    """Collects a job's control signals in a background thread."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        # a connection of its own: XREAD BLOCK holds it; ``client`` unblocks it at exit
        self._main = client
        self._client = dedicated_client(client, name=f"convoy-control:{job_id}")
        self._connection_id: int | None = None
        self._started = threading.Event()
        self.job_id = job_id
        self._events = {name: threading.Event() for name in SIGNALS}
        self._any = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"control-{job_id[:8]}", daemon=True)
        self._callbacks: list = []
        #: set by cancel or a timeout: what a running test script stops on
        self._stop_test = threading.Event()

    def __enter__(self) -> "ControlWatcher":
        with _watching_lock:
            _watching.setdefault(self.job_id, set()).add(self)
        self._thread.start()
        self._started.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        with _watching_lock:
            _watching.get(self.job_id, set()).discard(self)
            if not _watching.get(self.job_id):
                _watching.pop(self.job_id, None)
        self._stop.set()
        for _ in range(3):  # the reader may enter a new read just after an unblock: unblock again
            if self._connection_id is not None:
                try:  # end the blocking read now instead of at the end of its slice
                    self._main.client_unblock(self._connection_id)
                except redis.RedisError:
                    pass
            self._thread.join(timeout=1)
            if not self._thread.is_alive():
                break
        self._client.close()

    def on_signal(self, callback) -> None:
        """Call ``callback(name)`` from the watcher thread for every signal.

        Register before entering the watcher: the stream is read from its
        start, so a signal sent before the task began is delivered at once.
        """
        self._callbacks.append(callback)

    def _run(self) -> None:
        last = "0-0"
        stream = keys.job_control(self.job_id)
        try:
            self._connection_id = self._client.client_id()
        except redis.RedisError:
            pass  # Redis is away: the first read retries; exit waits for a slice's end meanwhile
        finally:
            self._started.set()
        while not self._stop.is_set():
            try:
                result = reconnecting(lambda: self._read(stream, last), stop=self._stop,
                                      what=f"control stream of job {self.job_id}")
            except CONNECTION_ERRORS:
                return  # stopped while Redis was away
            except Exception:  # an error reply, or the client closed under us at exit: never die silently
                if self._stop.is_set():
                    return
                log.exception("reading the control stream of job %s", self.job_id)
                self._stop.wait(1.0)
                continue
            for _, entries in result or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._deliver(fields.get(b"signal", fields.get("signal", b"")))

    def _read(self, stream: str, last: str) -> list:
        """One slice of ``XREAD BLOCK``; after a reconnection, learn the new connection's id first."""
        try:
            if self._connection_id is None:
                self._connection_id = self._client.client_id()
            return self._client.xread({stream: last}, block=BLOCK_SLICE_MS) or []
        except CONNECTION_ERRORS:
            self._connection_id = None
            raise

    def _deliver(self, raw: bytes | str) -> None:
        name = raw.decode() if isinstance(raw, bytes) else raw
        if name not in self._events:
            return
        self._events[name].set()
        if name in (Signal.CANCEL, Signal.TIMEOUT):
            self._stop_test.set()
        for callback in self._callbacks:
            callback(name)
        with self._any:
            self._any.notify_all()

    def deliver(self, name: str) -> None:
        """Deliver ``name`` here as if it was sent: a worker stopping a job that Redis no longer knows."""
        self._deliver(name)

    def clear(self, name: str) -> None:
        """Forget ``name`` so that the next such signal is waited for afresh."""
        self._events[name].clear()

    def received(self, name: str) -> bool:
        return self._events[name].is_set()

    @property
    def cancel_event(self) -> threading.Event:
        return self._events[Signal.CANCEL]

    @property
    def stop_test_event(self) -> threading.Event:
        """Set by ``cancel`` or ``timeout``: the test commands stop (a timeout fails the test, not the job)."""
        return self._stop_test

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
