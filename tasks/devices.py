"""Device records in Redis: which job holds a device, and whether it is alive."""
from __future__ import annotations

import redis

from convoy.coordinator import keys
from convoy.coordinator.store import now_iso


def claim_device(client: redis.Redis, device: str, job_id: str) -> None:
    client.hset(keys.device(device), mapping={"state": "busy", "job_id": job_id, "since": now_iso()})


def release_device(client: redis.Redis, device: str, job_id: str) -> None:
    """Mark the device idle, unless another job claimed it meanwhile (never happens by design)."""
    with client.pipeline() as pipe:
        pipe.hget(keys.device(device), "job_id")
        (holder,) = pipe.execute()
    if holder in (None, "", job_id):
        client.hset(keys.device(device), mapping={"state": "idle", "job_id": "", "since": now_iso()})
