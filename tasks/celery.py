"""convoy's Celery application: the app object, its one configuration and its result backend.

The configuration is a promise (``add_defaults`` with a callable): it is read
from the environment at first use, not at import, so ``convoy run`` can
start its private Redis and point the app at it after importing convoy.
Task modules register on this app; the coordinator builds signatures by
task name, so submitting a job never imports task code.

The result backend is Celery's Redis backend without result subscriptions:
convoy follows jobs through its own job store and never waits on an
``AsyncResult``, while the stock backend subscribes to the result channel of
every task a process sends (a chord's header does it through its
``GroupResult``) and unsubscribes only when those objects are collected, at
interpreter exit in a short CLI, where it fails noisily. This one stores and
reads results (and counts chord parts) exactly like the stock one; it just
never subscribes.
"""
from __future__ import annotations

import ssl
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend

from convoy.config.settings import Settings, load_settings

BACKEND_PATH = "convoy.tasks.celery:JobStoreRedisBackend"
DEFAULT_PRIORITY = 5


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


def tls_options(settings: Settings) -> dict[str, Any]:
    """kombu's and Celery's Redis TLS options (``broker_use_ssl``, ``redis_backend_use_ssl``) from the
    settings: the server's certificate always verified, a client certificate sent when set."""
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    for name, value in (("ssl_ca_certs", settings.redis_tls_ca), ("ssl_certfile", settings.redis_tls_cert),
                        ("ssl_keyfile", settings.redis_tls_key)):
        if value:
            options[name] = value
    return options


def _tls_config(settings: Settings) -> dict[str, Any]:
    """TLS for a ``rediss://`` broker or result backend (nothing for plain URLs)."""
    config: dict[str, Any] = {}
    if settings.effective_broker_url.startswith("rediss://"):
        config["broker_use_ssl"] = tls_options(settings)
    if settings.redis_url.startswith("rediss://"):
        config["redis_backend_use_ssl"] = tls_options(settings)
    return config


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, one message at a time, events on."""
    return {
        **_tls_config(settings),
        "broker_url": settings.effective_broker_url,
        "result_backend": backend_url(settings.redis_url),
        # JSON only: a pickle payload would let a broker writer run code on workers.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        # A device job holds its worker; ack after it ends so a crash returns it.
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "task_default_priority": DEFAULT_PRIORITY,
        "task_default_queue": settings.coordinator_queue,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # above the longest job: an unacked job is not redelivered while it runs
            "visibility_timeout": settings.visibility_timeout,
            "queue_order_strategy": "priority",
        },
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "result_expires": 7 * 24 * 3600,
        "result_extended": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def make_app() -> Celery:
    celery_app = Celery("convoy", set_as_current=False)
    celery_app.add_defaults(lambda: celery_config(load_settings()))
    return celery_app


app = make_app()
