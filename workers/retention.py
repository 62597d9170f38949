"""Retention of job directories: every host removes its own old ones (``CONVOY_KEEP_JOB_DIRS``).

A job's commands leave files in ``<state_dir>/jobs/<job id>/`` on the host
that ran them (a device's host, a coordinator), and hosts share no files, so
each host cleans its own: a directory untouched for longer than
``CONVOY_KEEP_JOB_DIRS`` goes once its job is final, or unknown to Redis
(a job Redis forgot); a job that still runs keeps its directory, however
old.  Its record and artifacts stay in Redis.

The hook is the heartbeat (:mod:`convoy.workers.heartbeat`): it already
beats in every convoy worker process on every host (each device's worker,
each coordinator, ``convoy run``'s embedded cluster), whereas the scheduler
pass runs on one coordinator only and the supervisor is not in every
deployment shape.  Several workers of one host share its directory: a lock
file lets one sweep at a time, and a sweep runs in a thread of its own, so a
large removal never delays the beat that renews the device's lease.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from convoy.config.lifecycle import FINAL_STATES

log = logging.getLogger(__name__)

#: the shortest and longest pause between two sweeps of one process
MIN_SWEEP_SECONDS = 5.0
MAX_SWEEP_SECONDS = 3600.0
#: in the jobs directory: held while one process of the host sweeps
LOCK_FILE = ".retention.lock"

#: job ids -> their states (None: unknown to Redis)
StatesOf = Callable[[list[str]], Mapping[str, str | None]]


@dataclass(frozen=True)
class JobDir:
    """One job directory as a sweep sees it: its job, how long untouched (seconds), its job's state."""

    job_id: str
    age: float
    state: str | None


def expired_job_dirs(dirs: Iterable[JobDir], keep_seconds: float) -> list[str]:
    """The job ids whose directories go: older than ``keep_seconds`` and final or unknown (pure)."""
    return [d.job_id for d in dirs
            if d.age > keep_seconds and (d.state is None or d.state in FINAL_STATES)]


def sweep_interval(keep_seconds: float) -> float:
    """How often a process sweeps: a quarter of the retention, within [5 s, 1 h] (pure)."""
    return min(MAX_SWEEP_SECONDS, max(MIN_SWEEP_SECONDS, keep_seconds / 4))


def _age(path: Path, now: float) -> float:
    """Seconds since the directory or any entry directly in it last changed."""
    newest = path.lstat().st_mtime
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
            except OSError:
                continue
    return now - newest


def sweep_job_dirs(jobs_dir: Path, keep_seconds: float, states_of: StatesOf,
                   now: float | None = None) -> list[str]:
    """Remove the expired job directories of ``jobs_dir``; the job ids removed.

    Nothing is removed while another process of this host sweeps (its lock),
    nor when the states cannot be read (``states_of`` raises: Redis is away).
    """
    if not jobs_dir.is_dir():
        return []
    with (jobs_dir / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        now = time.time() if now is None else now
        ages: dict[str, float] = {}
        for path in jobs_dir.iterdir():
            if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
                continue
            try:
                ages[path.name] = _age(path, now)
            except OSError:
                continue
        if not ages:
            return []
        states = states_of(list(ages))
        removed = []
        for job_id in expired_job_dirs((JobDir(j, a, states.get(j)) for j, a in ages.items()), keep_seconds):
            shutil.rmtree(jobs_dir / job_id, ignore_errors=True)
            if not (jobs_dir / job_id).exists():
                removed.append(job_id)
        return removed


class JobDirRetention:
    """Sweeps this host's job directories from the heartbeat: at most every :func:`sweep_interval`,
    in a thread of its own, one sweep at a time."""

    def __init__(self, jobs_dir: Path, keep_seconds: float, states_of: StatesOf,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.jobs_dir = jobs_dir
        self.keep_seconds = keep_seconds
        self.states_of = states_of
        self.clock = clock
        self.interval = sweep_interval(keep_seconds)
        self._next = 0.0
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls) -> JobDirRetention:
        from convoy.config.settings import load_settings
        from convoy.coordinator.state.connection import get_store

        settings = load_settings()
        store = get_store(settings)
        return cls(settings.jobs_dir, settings.keep_job_dirs, store.states)

    def maybe_sweep(self) -> None:
        """Start a sweep if one is due and none runs."""
        if self.clock() < self._next or (self._thread is not None and self._thread.is_alive()):
            return
        self._next = self.clock() + self.interval
        self._thread = threading.Thread(target=self._sweep, name="convoy-retention", daemon=True)
        self._thread.start()

    def _sweep(self) -> None:
        try:
            removed = sweep_job_dirs(self.jobs_dir, self.keep_seconds, self.states_of)
        except Exception:  # Redis away, a directory in use: the next sweep tries again
            log.exception("sweeping the job directories in %s", self.jobs_dir)
            return
        if removed:
            log.info("removed %d job director%s older than CONVOY_KEEP_JOB_DIRS (%gs): %s", len(removed),
                     "y" if len(removed) == 1 else "ies", self.keep_seconds, ", ".join(sorted(removed)))
