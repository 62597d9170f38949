"""The one Celery configuration every convoy process uses."""
from __future__ import annotations

from typing import Any

from convoy.config.result_backend import backend_url
from convoy.config.settings import Settings

DEFAULT_PRIORITY = 5


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, one message at a time, events on."""
    return {
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
