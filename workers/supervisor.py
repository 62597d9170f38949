"""``convoy worker``: one Celery worker process per device, kept alive.

Each device of the agent file gets its own ``celery worker`` (threads pool,
concurrency 1, consuming the device's own queue, where the scheduler routes the
jobs it assigns to the device), so a device runs one job at a time and a stuck
device never blocks another.  A worker that dies is restarted, and the
supervisor says so.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from convoy.config.devices import DeviceConfig, device_to_json
from convoy.tasks.canvas import device_queue
from convoy.tasks.run.runtime import DEVICE_ENV
from convoy.workers.lifeline import PARENT_PID_ENV

CELERY_APP = "convoy.workers.celery_entry"
#: a worker that dies sooner than this after starting is restarted after a pause
QUICK_DEATH_SECONDS = 5.0
RESTART_PAUSE_SECONDS = 2.0


def device_worker_command(device: DeviceConfig, log_file: Path) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
            "-Q", device_queue(device.name), "-n", f"{device.name}@%h",
            "-P", "threads", "-c", "1", "--without-gossip", "--without-mingle", "-E",
            "-l", "INFO", "--logfile", str(log_file)]


def coordinator_command(queue: str, log_file: Path, concurrency: int = 32) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
            "-Q", queue, "-n", "coordinator@%h", "-P", "threads", "-c", str(concurrency),
            "--without-gossip", "--without-mingle", "-E", "-l", "INFO", "--logfile", str(log_file)]


@dataclass
class Supervised:
    name: str
    command: list[str]
    env: dict[str, str]
    #: where the process's own stdout/stderr go (Celery's banner); None: inherited
    output: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    thread: threading.Thread | None = field(default=None, repr=False)


class Supervisor:
    """Starts processes, restarts any that dies, stops them all on request."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log
        self.children: list[Supervised] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def add(self, name: str, command: list[str], env: dict[str, str], output: Path | None = None) -> Supervised:
        child = Supervised(name=name, command=command, env=env, output=output)
        self.children.append(child)
        return child

    def add_device(self, device: DeviceConfig, log_dir: Path, env: dict[str, str] | None = None) -> Supervised:
        log_dir.mkdir(parents=True, exist_ok=True)
        child_env = dict(env or os.environ)
        child_env[DEVICE_ENV] = device_to_json(device)
        return self.add(f"device {device.name}", device_worker_command(device, log_dir / f"{device.name}.log"),
                        child_env, output=log_dir / f"{device.name}.out")

    def start(self) -> "Supervisor":
        """Start every process, each from its own watcher thread.

        The kernel ties a child's death signal to the thread that forked it,
        so each child is forked by the thread that watches it and lives as
        long as it does (until :meth:`stop`).
        """
        for child in self.children:
            spawned = threading.Event()
            failed: list[BaseException] = []
            child.thread = threading.Thread(target=self._run, args=(child, spawned, failed), daemon=True,
                                            name=f"watch-{child.name}")
            child.thread.start()
            spawned.wait()
            if failed:
                raise failed[0]
        return self

    def _run(self, child: Supervised, spawned: threading.Event, failed: list[BaseException]) -> None:
        try:
            if not self._spawn(child):
                return
        except BaseException as exc:  # handed to start(), in the caller's thread
            failed.append(exc)
            return
        finally:
            spawned.set()
        self._watch(child)

    def _spawn(self, child: Supervised) -> bool:
        """Start the child's process; False once stopping (stop() must see every process started)."""
        # the child asks the kernel to kill it when this process dies (SIGKILL runs no cleanup here)
        env = {**child.env, PARENT_PID_ENV: str(os.getpid())}
        with self._lock:
            if self._stopping.is_set():
                return False
            out = child.output.open("ab") if child.output else None
            try:
                child.process = subprocess.Popen(child.command, env=env, stdin=subprocess.DEVNULL,
                                                 stdout=out, stderr=subprocess.STDOUT if out else None,
                                                 start_new_session=True)
            finally:
                if out:
                    out.close()
            child.started = time.monotonic()
        return True

    def _watch(self, child: Supervised) -> None:
        while True:
            assert child.process is not None
            code = child.process.wait()
            if self._stopping.is_set():
                return
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            self.log(f"worker for {child.name} exited ({how}); restarting it")
            if time.monotonic() - child.started < QUICK_DEATH_SECONDS:
                if self._stopping.wait(RESTART_PAUSE_SECONDS):
                    return
            child.restarts += 1
            if not self._spawn(child):
                return
            self.log(f"worker for {child.name} restarted (pid {child.process.pid})")

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in self.children if c.process}

    def stop(self, timeout: float = 20.0) -> None:
        with self._lock:  # no process starts after this
            self._stopping.set()
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    def run_forever(self) -> None:
        """Block until SIGTERM or SIGINT, then stop every worker."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        done.wait()
        self.log("stopping workers")
        self.stop()
