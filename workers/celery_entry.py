"""The Celery app as workers load it (``celery -A convoy.workers.celery_entry``).

Importing this module registers every task and the worker lifecycle hooks.
A device worker, before its consumer starts (``worker_init``), asks to die
with its supervisor, takes its device's lock (one worker per device, ever),
and ends the job its previous process died holding; once it consumes
(``worker_ready``) it registers its device and shows it alive.  The
coordinator worker beats and runs the scheduler loop in a thread (it decides
only while it holds the scheduler's lease: one coordinator at a time).
"""
from __future__ import annotations

import logging
import os
import sys
import threading

from celery.signals import worker_init, worker_ready, worker_shutdown

from convoy.coordinator.state.connection import get_client, get_store
from convoy.coordinator.state.devices import is_registered, register
from convoy.coordinator.state.leases import DeviceLock, Holder
from convoy.coordinator.state.presence import AliveMark
from convoy.tasks import device as device_task
from convoy.tasks import parent  # noqa: F401  (importing it registers the tasks)
from convoy.tasks.celery import app
from convoy.tasks.run.runtime import current_device, device_from_env
from convoy.tasks.scheduler import Scheduler
from convoy.workers.heartbeat import Heartbeat
from convoy.workers.lifeline import die_with_parent
from convoy.workers.recovery import recover_device

log = logging.getLogger(__name__)
_heartbeat: Heartbeat | None = None
#: set when the worker shuts down: the scheduler thread gives up its lease
_stopping = threading.Event()
#: exit code of a worker that lost its device's lock to another worker
EXIT_LOCK_LOST = 75


def _say(message: str) -> None:
    """To the worker's own output: Celery's logging is not set up yet at ``worker_init``."""
    print(f"convoy worker: {message}", file=sys.stderr, flush=True)


def _still_registered() -> None:
    """Each beat: if Redis forgot this device (emptied, replaced), report the job it lost and register again."""
    runtime = current_device()
    client = get_client()
    if is_registered(client, runtime.name):
        return
    job = device_task.running_job()
    if job is not None:
        job.forgotten()
    register(client, runtime.device, runtime.host)
    log.warning("device %s: Redis no longer knew it; registered it again", runtime.name)


def _lock_lost(device: str) -> None:
    _say(f"device {device}: another worker holds its lock now; this worker stops serving it")
    os._exit(EXIT_LOCK_LOST)


@worker_init.connect
def _take_device(sender=None, **_: object) -> None:
    global _heartbeat
    die_with_parent()
    device = device_from_env()
    if device is None:  # the coordinator worker
        return
    client = get_client()
    lock = DeviceLock(client, device.name)

    def waiting(holder: Holder) -> None:
        _say(f"device {device.name} is served by another worker ({holder.describe()}); "
             "waiting for its lock before consuming")

    lock.acquire(on_wait=waiting)
    _heartbeat = Heartbeat(client, AliveMark.of_device(device.name), lock=lock,
                           on_lost=lambda: _lock_lost(device.name), on_beat=_still_registered).start(alive=False)
    recover_device(get_store(), current_device())


@worker_ready.connect
def _device_ready(sender=None, **_: object) -> None:
    global _heartbeat
    if device_from_env() is None:  # the coordinator worker
        _heartbeat = Heartbeat(get_client(), AliveMark.of_coordinator()).start()
        _start_scheduler()
        return
    runtime = current_device()
    register(get_client(), runtime.device, runtime.host)
    assert _heartbeat is not None, "worker_init takes the device's lock first"
    _heartbeat.announce()
    log.info("device %s serving queues %s", runtime.name, ", ".join(runtime.device.queues))


def _start_scheduler() -> None:
    scheduler = Scheduler(get_store(), app)
    threading.Thread(target=scheduler.run, args=(_stopping,), name="convoy-scheduler", daemon=True).start()


@worker_shutdown.connect
def _device_shutdown(sender=None, **_: object) -> None:
    _stopping.set()
    if _heartbeat is not None:
        _heartbeat.stop()


__all__ = ["app"]
