"""A lab of real convoy processes, for fault tests and the recovery bench: ``convoy coordinator`` and
``convoy worker`` as a lab runs them, each found and killed by pid.

Unlike :class:`~convoy.workers.embedded.cluster.EmbeddedCluster` (one
supervisor for everything, inside the caller), each part is the real command
a lab's service manager starts, in a process group of its own: a fault test
SIGKILLs the coordinator's Celery worker, one device's worker or the whole
``convoy worker``, and restarts what a service manager would.  Both share one
state directory (one host) and the Redis they are given.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis as redis_lib
import yaml

from convoy.config.devices import DeviceConfig
from convoy.coordinator.state.connection import make_client
from convoy.coordinator.state.devices import device_summaries
from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.presence import AliveMark, missing

READY_SECONDS = 90.0
CONVOY = str(Path(sys.executable).parent / "convoy")


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    """Re-check ``condition`` until it is true (its value) or ``timeout`` passes (False).

    For what no event announces: a process starting or dying, a device turning idle.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return False


def agent_file(path: Path, devices: Iterable[DeviceConfig]) -> Path:
    path.write_text(yaml.safe_dump({"name": "fault-host", "devices": [
        {"name": d.name, "queues": list(d.queues), "connector": d.connector,
         **({"device_type": d.device_type} if d.device_type else {}), "config": dict(d.config)}
        for d in devices]}))
    return path


@dataclass
class Lab:
    redis_url: str
    root: Path
    devices: list[DeviceConfig]
    env: dict[str, str] = field(default_factory=dict)
    coordinator: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    #: the queues of the lab's devices, one per device (for jobs the caller builds)
    queues: list[str] = field(default_factory=list)
    #: threads of the coordinator's Celery worker (``convoy coordinator --concurrency``)
    concurrency: int = 2

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **self.env, "CONVOY_REDIS_URL": self.redis_url,
                    "CONVOY_STATE_DIR": str(self.root / "state")}
        self.agents = agent_file(self.root / "agents.yaml", self.devices)
        self.queues = self.queues or [q for d in self.devices for q in d.queues[:1]]
        self.client: redis_lib.Redis = make_client(self.redis_url)
        self.store = JobStore(self.client)

    # --- processes ----------------------------------------------------------------
    def _start(self, name: str, *args: str) -> subprocess.Popen:
        with (self.root / f"{name}.log").open("ab") as log:
            return subprocess.Popen([CONVOY, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self, concurrency: int = 2) -> Lab:
        self.concurrency = concurrency
        self.start_coordinator()
        self.start_worker()
        self.wait_ready()
        return self

    def start_coordinator(self) -> None:
        self.coordinator = self._start("coordinator", "coordinator", "--concurrency", str(self.concurrency))

    def start_worker(self) -> None:
        self.worker = self._start("worker", "worker", "--config", str(self.agents))

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        marks = [AliveMark.of_coordinator(), *(AliveMark.of_device(d.name) for d in self.devices)]
        assert wait_until(lambda: not missing(self.client, marks), timeout), \
            f"lab not ready: {[m.name for m in missing(self.client, marks)]} missing; logs in {self.root}"

    def stop(self) -> None:
        for proc in (self.worker, self.coordinator):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
        self.client.close()

    def _celery_child(self, supervisor: subprocess.Popen | None, name: str) -> int:
        assert supervisor is not None and supervisor.poll() is None

        def find() -> int | None:
            for child in psutil.Process(supervisor.pid).children(recursive=True):
                try:
                    if f"{name}@" in " ".join(child.cmdline()):
                        return child.pid
                except psutil.NoSuchProcess:
                    continue
            return None

        pid = wait_until(find, 60)
        assert isinstance(pid, int), f"no Celery worker {name}@ under pid {supervisor.pid}"
        return pid

    def coordinator_pid(self) -> int:
        """The coordinator's Celery worker process (its supervisor restarts it)."""
        return self._celery_child(self.coordinator, "coordinator")

    def device_worker_pid(self, device: str) -> int:
        return self._celery_child(self.worker, device)

    def kill(self, pid: int) -> float:
        """SIGKILL ``pid``; when (monotonic), for timing the recovery."""
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    def kill_coordinator_supervisor(self) -> float:
        """SIGKILL ``convoy coordinator`` itself: its Celery worker dies with it; nothing restarts it."""
        assert self.coordinator is not None
        celery = self.coordinator_pid()
        killed = self.kill(self.coordinator.pid)
        self.coordinator.wait(timeout=30)
        wait_until(lambda: not psutil.pid_exists(celery) or
                   psutil.Process(celery).status() == psutil.STATUS_ZOMBIE, 30)
        return killed

    def kill_worker_supervisor(self) -> float:
        """SIGKILL ``convoy worker`` itself: its device workers and device farm die with it."""
        assert self.worker is not None
        killed = self.kill(self.worker.pid)
        self.worker.wait(timeout=30)
        return killed

    # --- conditions -------------------------------------------------------------------
    def all_idle(self) -> bool:
        summaries = device_summaries(self.client)
        mine = {d.name for d in self.devices}
        return all(s.health == "idle" and not s.job_id for s in summaries if s.name in mine) and \
            mine <= {s.name for s in summaries}

    def wait_idle(self, timeout: float = 120) -> float:
        """Wait until every device of the lab is idle, in service and alive; when (monotonic)."""
        assert wait_until(self.all_idle, timeout), \
            f"devices not idle: {[(s.name, s.health, s.job_id) for s in device_summaries(self.client)]}"
        return time.monotonic()

    def field(self, job_id: str, name: str) -> str | None:
        return self.store.fields([job_id], name)[0][name]

    def wait_job(self, job_id: str, condition: Callable[[], bool], timeout: float = 120,
                 what: str = "condition") -> None:
        assert self.store.wait_until([job_id], condition, timeout), \
            f"job {job_id}: {what} not reached; it is {self.store.state(job_id)}"

    def phase_starts(self, job_id: str) -> dict[str, int]:
        """How many times each phase of the job started (a device phase must never run twice)."""
        counts: dict[str, int] = {}
        for _, _, fields in self.store.read_events({job_id: "0-0"}):
            if fields.get("type") == "phase" and fields.get("event") == "start":
                counts[fields["phase"]] = counts.get(fields["phase"], 0) + 1
        return counts
