"""Retention of job directories: which go (a table), the sweep on real directories with a fake Redis, the setting."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from convoy.config.lifecycle import JobState
from convoy.config.settings import load_settings
from convoy.errors import ConvoyError
from convoy.workers.retention import (
    LOCK_FILE,
    JobDir,
    JobDirRetention,
    expired_job_dirs,
    sweep_interval,
    sweep_job_dirs,
)

DAY = 86400.0


@pytest.mark.parametrize("age, state, goes", [
    (4 * DAY, JobState.COMPLETE, True),       # old and final
    (4 * DAY, JobState.CANCELLED, True),
    (4 * DAY, None, True),                    # old and unknown to Redis (it forgot the job)
    (2 * DAY, JobState.COMPLETE, False),      # final but young
    (2 * DAY, None, False),
    (3 * DAY, JobState.COMPLETE, False),      # exactly the retention: kept
    (9 * DAY, JobState.TEST, False),          # a running job keeps its directory, however old
    (9 * DAY, JobState.ALLOCATED, False),     # a child holding its device
    (9 * DAY, JobState.WAITING, False),
    (9 * DAY, JobState.PROVISION, False),
    (9 * DAY, JobState.CLEANUP, False),
    (9 * DAY, JobState.RESERVE, False),
])
def test_expired_job_dirs(age: float, state: str | None, goes: bool) -> None:
    assert expired_job_dirs([JobDir("j", age, state)], keep_seconds=3 * DAY) == (["j"] if goes else [])


@pytest.mark.parametrize("keep, interval", [(3 * DAY, 3600.0), (1.0, 5.0), (120.0, 30.0)])
def test_sweep_interval(keep: float, interval: float) -> None:
    assert sweep_interval(keep) == interval


def _job_dir(jobs: Path, job_id: str, age: float, now: float) -> Path:
    path = jobs / job_id
    (path / "artifacts").mkdir(parents=True)
    (path / "artifacts" / "log.txt").write_text("x")
    for p in (path / "artifacts" / "log.txt", path / "artifacts", path):
        os.utime(p, (now - age, now - age))
    return path


def test_sweep_removes_only_old_final_or_unknown_dirs(tmp_path: Path) -> None:
    now = 1_000_000_000.0
    jobs = tmp_path / "jobs"
    _job_dir(jobs, "old-done", 4 * DAY, now)
    _job_dir(jobs, "old-unknown", 4 * DAY, now)
    _job_dir(jobs, "old-running", 4 * DAY, now)
    _job_dir(jobs, "young-done", 1 * DAY, now)
    fresh = _job_dir(jobs, "old-dir-fresh-entry", 4 * DAY, now)
    os.utime(fresh / "artifacts", (now, now))  # an entry directly in it changed now: not old
    (jobs / "stray-file").write_text("not a job directory")
    states = {"old-done": JobState.COMPLETE, "old-running": JobState.TEST, "young-done": JobState.COMPLETE,
              "old-dir-fresh-entry": JobState.COMPLETE}
    asked: list[list[str]] = []

    def states_of(ids: list[str]) -> dict[str, str | None]:
        asked.append(sorted(ids))
        return {i: states.get(i) for i in ids}

    removed = sweep_job_dirs(jobs, 3 * DAY, states_of, now=now)
    assert sorted(removed) == ["old-done", "old-unknown"]
    assert sorted(p.name for p in jobs.iterdir()) == sorted(
        [LOCK_FILE, "old-running", "young-done", "old-dir-fresh-entry", "stray-file"])
    assert asked == [sorted(["old-done", "old-unknown", "old-running", "young-done", "old-dir-fresh-entry"])]


def test_sweep_removes_nothing_when_redis_cannot_say(tmp_path: Path) -> None:
    now = 1_000_000_000.0
    jobs = tmp_path / "jobs"
    _job_dir(jobs, "old", 4 * DAY, now)

    def unreachable(ids: list[str]) -> dict[str, str | None]:
        raise ConnectionError("Redis is away")

    with pytest.raises(ConnectionError):
        sweep_job_dirs(jobs, 3 * DAY, unreachable, now=now)
    assert (jobs / "old").is_dir()
    assert sweep_job_dirs(tmp_path / "missing", 3 * DAY, unreachable, now=now) == []


def test_one_sweep_per_interval(tmp_path: Path) -> None:
    clock = [100.0]
    calls: list[list[str]] = []
    jobs = tmp_path / "jobs"
    _job_dir(jobs, "a", 10.0, 1e9)  # any age: the states say running, so nothing goes

    def running(ids: list[str]) -> dict[str, str | None]:
        calls.append(ids)
        return {i: JobState.TEST for i in ids}

    retention = JobDirRetention(jobs, keep_seconds=20.0, states_of=running, clock=lambda: clock[0])
    retention.maybe_sweep()
    assert retention._thread is not None
    retention._thread.join(10)
    retention.maybe_sweep()  # not due yet
    clock[0] += retention.interval
    retention.maybe_sweep()
    retention._thread.join(10)
    assert len(calls) == 2


@pytest.mark.parametrize("given, seconds", [(None, 3 * DAY), ("2h", 7200.0), ("90", 90.0), ("1d 12h", 1.5 * DAY)])
def test_keep_job_dirs_setting(given: str | None, seconds: float) -> None:
    assert load_settings({} if given is None else {"CONVOY_KEEP_JOB_DIRS": given}).keep_job_dirs == seconds


@pytest.mark.parametrize("given", ["soon", "-1h", "0"])
def test_keep_job_dirs_refused(given: str) -> None:
    with pytest.raises(ConvoyError, match="CONVOY_KEEP_JOB_DIRS"):
        load_settings({"CONVOY_KEEP_JOB_DIRS": given})
