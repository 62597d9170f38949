"""One worker process per device: a lease in Redis, taken before the worker consumes.

Two workers serving one device would run two jobs on it at once (a
supervisor restarted while its old workers lived did exactly that).  So a
device worker takes its device's lock — ``SET NX PX`` with a token of its
own — before its consumer starts, renews it from its heartbeat thread and
deletes it on a clean shutdown.  A worker that finds the lock held waits:
the holder's lease runs out within seconds of its death, and a holder on
this host that is provably gone (its pid no longer runs, or runs another
program) is taken over at once, so a restarted worker does not wait at all.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import psutil
import redis

from convoy.config.lifecycle import Signal
from convoy.coordinator.state import keys

log = logging.getLogger(__name__)

#: a lease not renewed for this long is free (the heartbeat renews it every few seconds)
LEASE_MS = 15_000
#: how often a waiting worker tries again (it waits for a death, not for an event)
RETRY_SECONDS = 0.5

# KEYS[1]=lock ARGV[1]=token ARGV[2]=ttl ms -> 1 renewed, 2 taken again (the key was lost), 0 held by another
_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""
# KEYS[1]=lock ARGV[1]=expected token ARGV[2]=new token ARGV[3]=ttl ms -> 1 swapped
_SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
"""
# KEYS[1]=lock ARGV[1]=token
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Holder:
    """Who holds a device: enough to tell, on the same host, whether it still runs."""

    host: str
    pid: int
    #: the process's start time (psutil), so a reused pid is not mistaken for the holder
    started: float
    nonce: str

    def token(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "started": self.started, "nonce": self.nonce},
                          sort_keys=True)

    @classmethod
    def parse(cls, token: str) -> "Holder | None":
        try:
            data = json.loads(token)
            return cls(host=str(data["host"]), pid=int(data["pid"]), started=float(data["started"]),
                       nonce=str(data["nonce"]))
        except (ValueError, KeyError, TypeError):
            return None

    @classmethod
    def this_process(cls) -> "Holder":
        return cls(host=socket.gethostname(), pid=os.getpid(), started=psutil.Process().create_time(),
                   nonce=uuid.uuid4().hex)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}" if self.pid else (self.nonce or "holder unknown")


def holder_is_gone(holder: Holder, host: str) -> bool:
    """True only when the holder runs on ``host`` (this host) and its process no longer does."""
    if holder.host != host:
        return False  # another host's process: only its lease running out tells
    try:
        process = psutil.Process(holder.pid)
        return process.create_time() != holder.started or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Lease:
    """A lease in Redis that makes this process the only holder of ``key`` (``what`` names it in logs)."""

    def __init__(self, client: redis.Redis, key: str, what: str, *, lease_ms: int = LEASE_MS) -> None:
        self.client = client
        self.what = what
        self.key = key
        self.lease_ms = lease_ms
        self.me = Holder.this_process()
        self.token = self.me.token()
        self._renew = client.register_script(_RENEW)
        self._swap = client.register_script(_SWAP)
        self._release = client.register_script(_RELEASE)

    def try_acquire(self) -> Holder | None:
        """Take the lock if it is free or its holder is gone; else return the holder."""
        if self.client.set(self.key, self.token, nx=True, px=self.lease_ms):
            return None
        current = self.client.get(self.key)
        if current is None:  # expired between the two calls
            return self.try_acquire()
        if current == self.token:
            return None
        holder = Holder.parse(current) or Holder(host="?", pid=0, started=0.0, nonce="")
        if holder_is_gone(holder, self.me.host) and self._swap(keys=[self.key],
                                                               args=[current, self.token, self.lease_ms]):
            log.warning("%s: took over the lease of %s, which is gone", self.what, holder.describe())
            return None
        return holder

    def acquire(self, on_wait: Callable[[Holder], None] | None = None, timeout: float | None = None) -> bool:
        """Block until this process holds the lock (False after ``timeout`` seconds).

        ``on_wait`` is told once per holder it waits for.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        told: Holder | None = None
        while True:
            try:
                holder = self.try_acquire()
            except redis.ConnectionError:  # Redis is back soon; never consume without the lock meanwhile
                holder = told or Holder(host="?", pid=0, started=0.0, nonce="Redis unreachable: holder unknown")
            if holder is None:
                return True
            if holder != told and on_wait is not None:
                on_wait(holder)
            told = holder
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(RETRY_SECONDS)

    def renew(self) -> bool:
        """Extend the lease; False when another worker holds the lock now (this one must stop)."""
        return self._renew(keys=[self.key], args=[self.token, self.lease_ms]) != 0

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.token])

    def holder(self) -> Holder | None:
        current = self.client.get(self.key)
        return Holder.parse(current) if current else None

    def lapsed(self) -> Holder | None:
        """The holder, if this lease no longer guards anything (see :func:`lapsed_leases`); None while alive."""
        return _lapsed(self.client, [self.key], self.me.host)[0]


class DeviceLock(Lease):
    """The lease that makes this process the only worker serving ``device``."""

    def __init__(self, client: redis.Redis, device: str, *, lease_ms: int = LEASE_MS) -> None:
        super().__init__(client, keys.device_worker(device), f"device {device}", lease_ms=lease_ms)
        self.device = device


class SchedulerLease(Lease):
    """The lease that makes this process the one scheduler deciding now (and the one firing deadlines)."""

    def __init__(self, client: redis.Redis, *, lease_ms: int = LEASE_MS) -> None:
        super().__init__(client, keys.SCHEDULER_LEASE, "scheduler", lease_ms=lease_ms)


#: the step leases this process holds now, renewed together by its heartbeat (:func:`renew_held`)
_held: set["StepLease"] = set()
_held_lock = threading.Lock()


class StepLease(Lease):
    """The lease of the coordinator running one of a parent's steps now.

    Held for the step's length (``with``), renewed by the process's heartbeat;
    a coordinator that dies stops renewing it and the scheduler re-runs the
    step elsewhere (:mod:`convoy.tasks.steps`).
    """

    def __init__(self, client: redis.Redis, parent_id: str, *, lease_ms: int = LEASE_MS) -> None:
        super().__init__(client, keys.job_step_lease(parent_id), f"parent {parent_id}", lease_ms=lease_ms)
        self.parent_id = parent_id

    def __enter__(self) -> "StepLease":
        with _held_lock:
            _held.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _held_lock:
            _held.discard(self)
        try:
            self.release()
        except redis.RedisError:  # it runs out by itself
            pass


#: the holder a lease that ran out (no key) is reported as
EXPIRED = Holder(host="?", pid=0, started=0.0, nonce="lease expired")


def _lapsed(client: redis.Redis, lease_keys: list[str], host: str) -> list[Holder | None]:
    values = client.mget(lease_keys) if lease_keys else []
    out: list[Holder | None] = []
    for key, current in zip(lease_keys, values, strict=True):
        if current is None:
            out.append(EXPIRED)
            continue
        holder = Holder.parse(current) or Holder(host="?", pid=0, started=0.0, nonce="")
        if holder_is_gone(holder, host):
            client.eval(_RELEASE, 1, key, current)  # only if still its own
            out.append(holder)
        else:
            out.append(None)
    return out


def lapsed_leases(client: redis.Redis, kind: str, names: list[str]) -> list[Holder | None]:
    """For each of ``names`` (devices for ``kind="device"``, parents for ``kind="step"``): the holder of its
    lease if that lease no longer guards anything — run out (:data:`EXPIRED`, pid 0) or held by a process
    gone from this host (its key is then deleted, so the next holder takes it at once) — else None.

    One round trip for all of them: the scheduler checks every busy device and moving parent each pass.
    """
    key_of = {"device": keys.device_worker, "step": keys.job_step_lease}[kind]
    return _lapsed(client, [key_of(name) for name in names], socket.gethostname())


def renew_held() -> None:
    """Renew every step lease this process holds (the heartbeat calls it each beat).

    A lease whose key was gone and whose job Redis no longer knows (emptied, replaced) stops the step:
    its signal watchers here are told ``cancel``, and the step reports the job lost.
    """
    from convoy.coordinator.state.control import deliver_here

    with _held_lock:
        held = list(_held)
    for lease in held:
        renewed = lease._renew(keys=[lease.key], args=[lease.token, lease.lease_ms])
        if renewed == 0:
            log.error("parent %s: another coordinator took over its step lease", lease.parent_id)
        elif renewed == 2 and not lease.client.hexists(keys.job(lease.parent_id), "state"):
            log.error("parent %s: Redis no longer knows the job (restarted without its data, or replaced); "
                      "stopping its step", lease.parent_id)
            deliver_here(lease.parent_id, Signal.CANCEL)
