"""The Celery app as workers load it (``celery -A convoy.workers.celery_entry``).

Importing this module registers every task and the worker lifecycle hooks:
a device worker registers its device, recovers a job its previous process
died holding, and beats; the coordinator worker needs none of that.
"""
from __future__ import annotations

import logging

from celery.signals import worker_ready, worker_shutdown

from convoy.config.celery_app import app
from convoy.coordinator import keys
from convoy.coordinator.connection import get_store
from convoy.tasks import device_job, parent  # noqa: F401  (registers the tasks)
from convoy.tasks.device_runtime import current_device, device_from_env
from convoy.workers.heartbeat import Heartbeat, register_device
from convoy.workers.recovery import recover_device

log = logging.getLogger(__name__)
_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _device_ready(sender=None, **_: object) -> None:
    global _heartbeat
    if device_from_env() is None:  # the coordinator worker
        _heartbeat = Heartbeat(get_store().r, "coordinator", key=keys.COORDINATOR_ALIVE).start()
        return
    runtime = current_device()
    store = get_store()
    recover_device(store, runtime)
    register_device(store.r, runtime.device, runtime.host)
    _heartbeat = Heartbeat(store.r, runtime.name).start()
    log.info("device %s serving queues %s", runtime.name, ", ".join(runtime.device.queues))


@worker_shutdown.connect
def _device_shutdown(sender=None, **_: object) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


__all__ = ["app"]
