"""Telling many waiters when their jobs end, with one thread and one Redis connection.

``convoy server`` answers ``wait_for_job`` long polls: hundreds of clients may each wait on a job for
hours.  A thread (and a blocked Redis connection) per waiter would not stay flat, so one
:class:`FinalWatcher` reads the event streams of every watched job in a single ``XREAD BLOCK`` and calls
each waiter back when its job's state is final.  A new watch interrupts the read in progress
(``CLIENT UNBLOCK``) so its stream is read at once; its position is taken before its state is checked,
so an event in between is never missed (subscribe, then check).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from convoy.config.lifecycle import FINAL_STATES
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import (
    BLOCK_SLICE_MS,
    CONNECTION_ERRORS,
    dedicated_client,
    reconnecting,
)
from convoy.errors import JobNotFound

log = logging.getLogger(__name__)

#: how long a new watch waits for the reader to take its stream in (it is normally a few ms)
KICK_PATIENCE_SECONDS = 1.0

Callback = Callable[[str], None]


class FinalWatcher:
    """Calls ``callback(state)`` once a watched job's state is final (from its own thread)."""

    def __init__(self, client: redis.Redis, name: str = "convoy-finals") -> None:
        self._main = client
        self._client = dedicated_client(client, name=name)
        self._lock = threading.Condition()
        #: job id -> [stream position, callbacks]
        self._watched: dict[str, tuple[str, list[Callback]]] = {}
        self._generation = 0  # bumped by every new watch
        self._seen = 0  # the generation the reader's current read includes
        self._reading = False
        self._connection_id: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the waiters' side -------------------------------------------------------------
    def watch(self, job_id: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(state)`` when the job is final (at once if it is); returns a function that
        stops watching.  ``JobNotFound`` for an unknown job."""
        stream = keys.job_events(job_id)
        last = self._main.xrevrange(stream, count=1)
        position = str(last[0][0].decode() if isinstance(last[0][0], bytes) else last[0][0]) if last else "0-0"
        state = self._main.hget(keys.job(job_id), "state")
        if state is None:
            raise JobNotFound(job_id)
        state = state.decode() if isinstance(state, bytes) else state
        if state in FINAL_STATES:
            callback(state)
            return lambda: None
        with self._lock:
            known = self._watched.get(job_id)
            if known:
                known[1].append(callback)
            else:
                self._watched[job_id] = (position, [callback])
            self._generation += 1
            generation = self._generation
            self._start()
            self._lock.notify_all()
        self._kick(generation)
        return lambda: self._unwatch(job_id, callback)

    def _unwatch(self, job_id: str, callback: Callback) -> None:
        with self._lock:
            known = self._watched.get(job_id)
            if known and callback in known[1]:
                known[1].remove(callback)
                if not known[1]:
                    del self._watched[job_id]

    def _kick(self, generation: int) -> None:
        """Make the reader take the new stream in: unblock its read unless it already includes it."""
        with self._lock:
            deadline_reached = not self._lock.wait_for(
                lambda: self._seen >= generation or (self._reading and self._connection_id is not None),
                timeout=KICK_PATIENCE_SECONDS)
            if deadline_reached or self._seen >= generation:
                return
            connection_id = self._connection_id
        if connection_id is None:
            return
        deadline = time.monotonic() + KICK_PATIENCE_SECONDS
        try:  # a read without the new stream is in progress (or about to start): end it now
            while self._seen < generation and time.monotonic() < deadline:
                if self._main.client_unblock(connection_id):
                    return
                with self._lock:  # not blocked at this instant: between two reads, or entering one
                    self._lock.wait_for(lambda: self._seen >= generation, timeout=0.005)
        except redis.RedisError:
            pass  # Redis away: the reader's next slice takes the stream in

    # --- the reader --------------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="final-watcher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the reader (waiters still watching hear nothing more)."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
            connection_id = self._connection_id if self._reading else None
        if connection_id is not None:
            try:
                self._main.client_unblock(connection_id)
            except redis.RedisError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self._watched and not self._stop.is_set():
                    self._seen = self._generation
                    self._lock.wait(1.0)
                by_stream = {keys.job_events(job_id): job_id for job_id in self._watched}
                positions = {stream: self._watched[job_id][0] for stream, job_id in by_stream.items()}
                self._seen = self._generation
                self._lock.notify_all()
            if self._stop.is_set():
                return
            try:
                result = reconnecting(functools.partial(self._read, positions), stop=self._stop,
                                      what="job final-state watcher")
            except CONNECTION_ERRORS:
                return  # stopped while Redis was away
            except Exception:  # an error reply: log it, never die silently
                log.exception("reading the event streams of %d watched jobs", len(positions))
                self._stop.wait(1.0)
                continue
            self._deliver(result, by_stream)

    def _read(self, positions: dict[str, str]) -> Any:
        try:
            if self._connection_id is None:
                self._connection_id = self._client.client_id()
            with self._lock:
                self._reading = True
                self._lock.notify_all()
            try:
                return self._client.xread(dict(positions), block=BLOCK_SLICE_MS) or []  # type: ignore[arg-type]
            finally:
                with self._lock:
                    self._reading = False
        except CONNECTION_ERRORS:
            self._connection_id = None
            raise

    def _deliver(self, result: list, by_stream: dict[str, str]) -> None:
        """Move the watched jobs' positions on; call back the waiters of those now final."""
        moved: dict[str, str] = {}
        for stream, entries in result:
            name = stream.decode() if isinstance(stream, bytes) else stream
            last = entries[-1][0]
            moved[by_stream[name]] = last.decode() if isinstance(last, bytes) else last
        if not moved:
            return
        ids = list(moved)
        pipe = self._main.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        states = [s.decode() if isinstance(s, bytes) else s for s in pipe.execute()]
        finished: list[tuple[list[Callback], str]] = []
        with self._lock:
            for job_id, state in zip(ids, states, strict=True):
                known = self._watched.get(job_id)
                if known is None:
                    continue
                if state is None or state in FINAL_STATES:
                    finished.append((known[1], state or "unknown"))
                    del self._watched[job_id]
                else:
                    self._watched[job_id] = (moved[job_id], known[1])
        for callbacks, state in finished:
            for callback in callbacks:
                try:
                    callback(state)
                except Exception:  # one waiter's failure is not the others'
                    log.exception("a final-state callback failed")
