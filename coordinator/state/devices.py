"""The device registry in Redis: which job holds a device, and what devices and queues look like now.

Claims and releases are what a device's worker writes; the summaries are
what ``convoy agents``, ``list-queues`` and ``queue-status`` read.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

from convoy.coordinator.state import keys
from convoy.coordinator.state.jobs import now_iso


@dataclass(frozen=True)
class DeviceSummary:
    name: str
    host: str
    queues: tuple[str, ...]
    status: str  # online (idle), busy, offline
    job_id: str | None


@dataclass(frozen=True)
class QueueSummary:
    queue: str
    total: int
    online: int
    busy: int
    waiting: list[str]


def device_summaries(client: redis.Redis) -> list[DeviceSummary]:
    names = sorted(client.smembers(keys.DEVICES))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.device(name))
        pipe.exists(keys.device_alive(name))
    replies = pipe.execute()
    out = []
    for name, record, alive in zip(names, replies[0::2], replies[1::2]):
        job_id = record.get("job_id") or None
        status = "offline" if not alive else ("busy" if record.get("state") == "busy" else "online")
        out.append(DeviceSummary(name=name, host=record.get("host", "?"),
                                 queues=tuple(q for q in record.get("queues", "").split(",") if q),
                                 status=status, job_id=job_id))
    return out


def queue_summaries(client: redis.Redis) -> list[QueueSummary]:
    devices = device_summaries(client)
    out = []
    for queue in sorted(client.smembers(keys.QUEUES)):
        serving = [d for d in devices if queue in d.queues]
        waiting = client.zrange(keys.queue_waiting(queue), 0, -1)
        out.append(QueueSummary(queue=queue, total=len(serving),
                                online=sum(d.status != "offline" for d in serving),
                                busy=sum(d.status == "busy" for d in serving), waiting=waiting))
    return out


def claim_device(client: redis.Redis, device: str, job_id: str) -> None:
    client.hset(keys.device(device), mapping={"state": "busy", "job_id": job_id, "since": now_iso()})


def release_device(client: redis.Redis, device: str, job_id: str) -> None:
    """Mark the device idle, unless another job claimed it meanwhile (checked and set atomically)."""
    key = keys.device(device)

    def release(pipe: redis.client.Pipeline) -> None:
        holder = pipe.hget(key, "job_id")
        if holder in (None, "", job_id):
            pipe.multi()
            pipe.hset(key, mapping={"state": "idle", "job_id": "", "since": now_iso()})

    client.transaction(release, key)
