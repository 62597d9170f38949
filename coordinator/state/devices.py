"""The device registry in Redis: which job holds a device, and what devices and queues look like now.

Registration, claims and releases are what a device's worker writes; the
known queues are what ``submit_job`` checks a job against; the summaries are
what ``convoy agents``, ``list-queues`` and ``queue-status`` read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import redis

from convoy.config.devices import DeviceConfig
from convoy.coordinator.state import keys
from convoy.coordinator.state.jobs import now_iso
from convoy.coordinator.state.presence import AliveMark


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


def register(client: redis.Redis, device: DeviceConfig, host: str) -> None:
    """Record the device and its queues (and show it alive), so jobs for them are accepted and listed.

    A device registered before keeps its state (idle or busy) and holder:
    a restarted worker must not forget the job its device held.
    """
    pipe = client.pipeline()
    pipe.sadd(keys.DEVICES, device.name)
    for queue in device.queues:
        pipe.sadd(keys.QUEUES, queue)
    pipe.hset(keys.device(device.name), mapping={
        "name": device.name, "queues": ",".join(device.queues), "connector": device.connector,
        "host": host, "pid": os.getpid(), "started_at": now_iso(),
    })
    pipe.hsetnx(keys.device(device.name), "state", "idle")
    AliveMark.of_device(device.name).set(pipe)
    pipe.execute()


def known_queues(client: redis.Redis) -> set[str]:
    """Every queue some registered device serves (a job naming another is rejected)."""
    return set(client.smembers(keys.QUEUES))


def holder(client: redis.Redis, name: str) -> str | None:
    """The id of the job that holds device ``name`` now, if any."""
    return client.hget(keys.device(name), "job_id") or None


def device_summaries(client: redis.Redis) -> list[DeviceSummary]:
    names = sorted(client.smembers(keys.DEVICES))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.device(name))
        pipe.exists(keys.device_alive(name))
    replies = pipe.execute()
    out = []
    for name, record, alive in zip(names, replies[0::2], replies[1::2], strict=True):
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
