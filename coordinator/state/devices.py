"""The device registry in Redis: what each device is, its health, and which job holds it.

A device's worker registers it (name, host, queues, ``device_type``, tags,
connector) and keeps it alive; the scheduler assigns idle devices to jobs
(``coordinator/state/schedule.py``); the worker claims its device when it
starts the job and releases it after cleanup.  Admins take a device out of
service (``maintenance``) and back (``online``); three provisioning failures
in a row do the first by themselves.  Every change that can let a waiting job
start wakes the scheduler.

A device's **health** is derived, never stored: ``maintenance`` (idle with a
maintenance reason: a busy device finishes its job first), ``offline`` (its
worker's alive mark is gone), ``assigned`` (chosen for a job, not yet
provisioning), ``busy``, or ``idle``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import redis

from convoy.config.devices import DeviceConfig, Health
from convoy.coordinator.state import keys
from convoy.coordinator.state.jobs import now_iso
from convoy.coordinator.state.presence import AliveMark
from convoy.coordinator.state.schedule import wake
from convoy.errors import ConvoyError

#: consecutive provisioning failures that put a device in maintenance (LAVA's health checks do the same)
MAX_PROVISION_FAILURES = 3


@dataclass(frozen=True)
class DeviceSummary:
    """One registered device as ``convoy agents`` shows it and the scheduler sees it."""

    name: str
    host: str
    queues: tuple[str, ...]
    health: Health
    job_id: str | None
    device_type: str | None = None
    tags: tuple[str, ...] = ()
    connector: str = ""
    #: why the device is (or, once its job ends, goes) in maintenance; empty when in service
    maintenance: str = ""
    failures: int = 0
    #: idle, assigned or busy, whatever the worker's health (an offline device may still be assigned)
    occupancy: Health = Health.IDLE
    #: when the occupancy last changed (epoch seconds; 0 if unknown)
    since: float = 0.0


@dataclass(frozen=True)
class QueueSummary:
    queue: str
    total: int
    online: int
    busy: int
    waiting: list[str]


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(part for part in (text or "").split(",") if part)


def _epoch(iso: str | None) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else 0.0
    except ValueError:
        return 0.0


def _occupancy(record: dict[str, str]) -> Health:
    """Idle, assigned or busy: what the record says, whatever the worker's health."""
    state = record.get("state")
    return Health(state) if state in (Health.ASSIGNED, Health.BUSY) else Health.IDLE


def health_of(record: dict[str, str], alive: bool) -> Health:
    """A device's health from its record and whether its worker beats."""
    occupancy = _occupancy(record)
    if record.get("maintenance") and occupancy == Health.IDLE:
        return Health.MAINTENANCE
    if not alive:
        return Health.OFFLINE
    return occupancy


def register(client: redis.Redis, device: DeviceConfig, host: str) -> None:
    """Record the device, its queues, type and tags (and show it alive); wake the scheduler.

    A device registered before keeps its occupancy (idle, assigned or busy),
    its holder and any maintenance: a restarted worker must not forget the
    job its device held, nor put a device in service that an admin took out.
    """
    pipe = client.pipeline()
    pipe.sadd(keys.DEVICES, device.name)
    for queue in device.queues:
        pipe.sadd(keys.QUEUES, queue)
    pipe.hset(keys.device(device.name), mapping={
        "name": device.name, "queues": ",".join(device.queues), "connector": device.connector,
        "device_type": device.device_type or "", "tags": ",".join(device.tags),
        "host": host, "pid": os.getpid(), "started_at": now_iso(),
    })
    pipe.hsetnx(keys.device(device.name), "state", Health.IDLE)
    AliveMark.of_device(device.name).set(pipe)
    wake(pipe, f"device {device.name} registered")
    pipe.execute()


def is_registered(client: redis.Redis, name: str) -> bool:
    """Whether Redis knows device ``name`` (an emptied or replaced Redis forgot every device)."""
    return bool(client.sismember(keys.DEVICES, name)) and bool(client.exists(keys.device(name)))


def known_queues(client: redis.Redis) -> set[str]:
    """Every queue some registered device serves (a job naming another is rejected)."""
    return set(client.smembers(keys.QUEUES))


def holder(client: redis.Redis, name: str) -> str | None:
    """The id of the job that holds (or is assigned) device ``name`` now, if any."""
    return client.hget(keys.device(name), "job_id") or None


def device_summaries(client: redis.Redis) -> list[DeviceSummary]:
    """Every registered device with its health, by name (two round trips)."""
    names = sorted(client.smembers(keys.DEVICES))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.device(name))
        pipe.exists(keys.device_alive(name))
    replies = pipe.execute()
    out = []
    for name, record, alive in zip(names, replies[0::2], replies[1::2], strict=True):
        if not record:
            continue  # removed meanwhile
        out.append(DeviceSummary(
            name=name, host=record.get("host", "?"), queues=_split(record.get("queues")),
            health=health_of(record, bool(alive)), job_id=record.get("job_id") or None,
            device_type=record.get("device_type") or None, tags=_split(record.get("tags")),
            connector=record.get("connector", ""), maintenance=record.get("maintenance", ""),
            failures=int(record.get("failures") or 0), occupancy=_occupancy(record),
            since=_epoch(record.get("since"))))
    return out


def queue_summaries(client: redis.Redis) -> list[QueueSummary]:
    devices = device_summaries(client)
    out = []
    for queue in sorted(client.smembers(keys.QUEUES)):
        serving = [d for d in devices if queue in d.queues]
        waiting = client.zrange(keys.queue_waiting(queue), 0, -1)
        out.append(QueueSummary(
            queue=queue, total=len(serving),
            online=sum(d.health not in (Health.OFFLINE, Health.MAINTENANCE) for d in serving),
            busy=sum(d.health in (Health.BUSY, Health.ASSIGNED) for d in serving), waiting=waiting))
    return out


# KEYS[1]=device ARGV[1]=job id ARGV[2]=now -> 1 claimed, 0 the device is another job's
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
local holder = redis.call('HGET', KEYS[1], 'job_id')
if (state == 'assigned' or state == 'busy') and holder and holder ~= '' and holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'busy', 'job_id', ARGV[1], 'since', ARGV[2])
return 1
"""


def claim_device(client: redis.Redis, device: str, job_id: str) -> bool:
    """The worker starts ``job_id`` on its device: assigned (or idle) → busy. False if another job has it."""
    return bool(client.eval(_CLAIM, 1, keys.device(device), job_id, now_iso()))


def release_device(client: redis.Redis, device: str, job_id: str) -> bool:
    """Mark the device idle unless another job holds it now (checked and set atomically); wake the scheduler."""
    key = keys.device(device)
    released = False

    def release(pipe: redis.client.Pipeline) -> None:
        nonlocal released
        holder = pipe.hget(key, "job_id")
        pipe.multi()
        if holder in (None, "", job_id):
            pipe.hset(key, mapping={"state": Health.IDLE, "job_id": "", "since": now_iso()})
            wake(pipe, f"device {device} released by {job_id}")
            released = True

    client.transaction(release, key)
    return released


# KEYS[1]=device ARGV[1]=job id ARGV[2]=now -> 1 unassigned, 0 not assigned to that job
_UNASSIGN = """
if redis.call('HGET', KEYS[1], 'state') == 'assigned' and redis.call('HGET', KEYS[1], 'job_id') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', 'idle', 'job_id', '', 'since', ARGV[2])
  return 1
end
return 0
"""


def unassign_device(client: redis.Redis, device: str, job_id: str) -> bool:
    """Give back a device assigned to ``job_id`` that will not start it (never one it runs); wake the scheduler."""
    if not client.eval(_UNASSIGN, 1, keys.device(device), job_id, now_iso()):
        return False
    wake(client, f"device {device} no longer assigned to {job_id}")
    return True


def set_maintenance(client: redis.Redis, device: str, reason: str) -> None:
    """Take ``device`` out of service; a job it runs now finishes first.  ConvoyError if unknown."""
    _known(client, device)
    client.hset(keys.device(device), mapping={"maintenance": reason or "maintenance", "since": now_iso()})


def set_online(client: redis.Redis, device: str) -> None:
    """Put ``device`` back in service (its failure count starts again); wake the scheduler."""
    _known(client, device)
    pipe = client.pipeline()
    pipe.hset(keys.device(device), mapping={"maintenance": "", "failures": 0, "since": now_iso()})
    wake(pipe, f"device {device} online")
    pipe.execute()


def provision_failed(client: redis.Redis, device: str, reason: str) -> bool:
    """Count a failed provisioning; at the third in a row the device goes to maintenance (True)."""
    failures = int(client.hincrby(keys.device(device), "failures", 1))
    if failures < MAX_PROVISION_FAILURES:
        return False
    client.hset(keys.device(device), "maintenance",
                f"provisioning failed {failures} times in a row; last: {reason}")
    return True


def provision_succeeded(client: redis.Redis, device: str) -> None:
    client.hset(keys.device(device), "failures", 0)


def _known(client: redis.Redis, device: str) -> None:
    if not client.sismember(keys.DEVICES, device):
        known = ", ".join(sorted(client.smembers(keys.DEVICES))) or "none"
        raise ConvoyError(f"no device named {device!r} is registered (registered: {known})")
