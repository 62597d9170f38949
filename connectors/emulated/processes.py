"""Processes left running on an emulated device, found by the marker in their environment.

Every command the device's SSH server runs carries ``CONVOY_EMULATED_DEVICE``
in its environment, and so do its children, even daemons that leave the
session (``iperf3 -s -D``).  Cleanup ends them, as re-imaging a real device
would.
"""
from __future__ import annotations

import os
import signal
import time

MARKER = "CONVOY_EMULATED_DEVICE"


def device_processes(device: str) -> list[int]:
    """Pids of the processes started on ``device`` that still run."""
    wanted = f"{MARKER}={device}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def kill_device_processes(device: str, grace: float = 2.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds, every process of ``device``; return how many."""
    pids = device_processes(device)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)  # a handful of processes ending: no event to wait on
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
