"""Processes left running on an emulated device, found by the marker in their environment.

Every command the device's SSH server runs carries ``CONVOY_EMULATED_DEVICE``
in its environment, and so do its children, even daemons that leave the
session (``iperf3 -s -D``).  Cleanup ends them, as re-imaging a real device
would.
"""
from __future__ import annotations

import time
from typing import Callable

import psutil

MARKER = "CONVOY_EMULATED_DEVICE"


def device_processes(device: str) -> list[psutil.Process]:
    """The processes started on ``device`` that still run."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == device:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):  # gone, or not ours
            continue
    return found


def kill_device_processes(device: str, grace: float = 2.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds, every process of ``device``; return how many."""
    processes = device_processes(device)
    for process in processes:
        _quietly(process.terminate)
    # not psutil.wait_procs: a zombie nobody reaps yet (an orphaned daemon) runs nothing, but "exists"
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(p) for p in processes):
        time.sleep(0.05)  # a handful of processes ending: no event to wait on
    for process in processes:
        if _running(process):
            _quietly(process.kill)
    return len(processes)


def _running(process: psutil.Process) -> bool:
    """True unless the process is gone or a zombie (an unreaped corpse runs nothing)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
