"""Celery's Redis result backend, without result subscriptions.

convoy follows jobs through its own job store and never waits on an
``AsyncResult``.  Celery's Redis backend still subscribes to the result
channel of every task a process sends (a chord's header does it through its
``GroupResult``), and unsubscribes only when those objects are collected —
at interpreter exit in a short CLI, where it fails noisily.  This backend
stores and reads results (and counts chord parts) exactly like the stock one;
it just never subscribes.
"""
from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend

BACKEND_PATH = "convoy.config.result_backend:JobStoreRedisBackend"


class JobStoreRedisBackend(RedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> dict[str, Any]:
        return {}

    def add_pending_result(self, result: Any, weak: bool = False, start_drainer: bool = True) -> Any:
        return result

    def remove_pending_result(self, result: Any) -> Any:
        return result


def backend_url(redis_url: str) -> str:
    """``result_backend`` setting naming this class in Celery's ``class+url`` form."""
    return f"{BACKEND_PATH}+{redis_url}"
