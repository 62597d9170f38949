"""The peer: a bare Celery app with no-op tasks, for the benchmarks' baselines.

Started by the benchmarks as ``python -m celery -A peer_celery worker ...``
with ``bench/`` on ``PYTHONPATH``; they import it too, to send its tasks.
Broker and result backend are the same plain ``redis://`` URL
(``PEER_REDIS_URL``; the benchmarks use another database of the cluster's
own Redis server, so both sides share one server and one machine).

Kept as close to stock Celery as the comparison allows: JSON, and the same
broker semantics convoy's device workers use (late acks, prefetch 1,
priority-ordered Redis queues), because those are what a device job needs.
No task events, no STARTED state, no custom backend: those are convoy's
choices and their cost belongs to convoy's side of the comparison.
"""
from __future__ import annotations

import os
import socket

from celery import Celery
from celery.signals import worker_ready

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/2")
#: a worker announces itself here when it is ready (the benchmark waits for every one)
READY_KEY = "peer:ready:{}"

app = Celery("peer", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"queue_order_strategy": "priority"},
    worker_hijack_root_logger=False,
    result_expires=3600,
)


@app.task(name="peer.noop")
def noop(*args: object) -> None:
    """Does nothing (a chord body receives the header's results as its argument)."""
    return


@worker_ready.connect
def _announce(sender=None, **_: object) -> None:
    import redis

    name = getattr(sender, "hostname", None) or socket.gethostname()
    client = redis.Redis.from_url(REDIS_URL)
    client.set(READY_KEY.format(name), "1", ex=24 * 3600)
    client.close()
