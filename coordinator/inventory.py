"""What the devices and queues look like now: for ``agents``, ``list-queues``, ``queue-status``."""
from __future__ import annotations

from dataclasses import dataclass

import redis

from convoy.coordinator import keys


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
