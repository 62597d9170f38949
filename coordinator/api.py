"""convoy's Python API: submit a job, follow it, cancel it, read its results.

``submit_job`` validates the whole document (and that the lab can ever run
it) before anything is stored; a job is either fully recorded and in line
for the scheduler, or not at all.

Two ways to reach the lab, one API: with ``CONVOY_SERVER`` set (a user's
machine) every function asks ``convoy server`` (``coordinator/remote.py``,
with the user's token); without it (lab components, the embedded ``convoy
run``) they read and write Redis directly.
"""
from __future__ import annotations

import os
import time
import urllib.parse
import uuid
from typing import Any

import redis

from convoy.config.jobs import GUEST_QUEUE, is_multi, load_job
from convoy.config.lifecycle import FINAL_STATES
from convoy.config.settings import Settings, load_settings
from convoy.config.yamlsafe import read_document
from convoy.coordinator.follow import LiveSource, StoreSource
from convoy.coordinator.remote import ServerClient, ServerSource, client_for
from convoy.coordinator.results import job_results as _job_results
from convoy.coordinator.scheduling.feasibility import feasible
from convoy.coordinator.scheduling.model import WaitingJob
from convoy.coordinator.scheduling.requirements import requirements
from convoy.coordinator.state import clients
from convoy.coordinator.state.connection import check_redis, get_client, get_store
from convoy.coordinator.state.devices import device_summaries, known_queues
from convoy.coordinator.state.schedule import enqueue
from convoy.coordinator.state.urls import redact_url
from convoy.errors import ConvoyError, FieldError, JobNotFound, JobValidationError, ServiceUnavailable
from convoy.tasks.cancel import cancel_job as _cancel_job
from convoy.tasks.scheduler import device_view


def _server(settings: Settings | None) -> tuple[Settings, ServerClient | None]:
    """The settings, and the client of ``convoy server`` when ``CONVOY_SERVER`` names one."""
    settings = settings or load_settings()
    return settings, (client_for(settings) if settings.server_url else None)


def _check_satisfiable(job: dict[str, Any], client: redis.Redis) -> None:
    """Refuse, before anything is stored, a job the registered devices can never run.

    Every registered device counts, whatever its health (a busy, offline or
    maintenance device may serve the job later): an unknown queue is named
    with the known ones; anything else the lab lacks (a second device of a
    queue, a device_type, a tag, a device not excluded) is named by the
    allocator's feasibility check, Hall's condition included.
    """
    needs = requirements(job)
    if not needs:
        return  # only secondary connections: no device needed
    known = known_queues(client)
    errors = [
        FieldError("job_queue" if i is None else f"provision_data.jobs[{i}].job_queue",
                   f"no device serves queue {req.queue!r} (known queues: {', '.join(sorted(known)) or 'none'})")
        for i, req in needs if req.queue is not None and req.queue not in known
    ]
    wanted = tuple(req for _, req in needs)
    if not errors:
        devices = [device_view(d) for d in device_summaries(client)]
        for problem in feasible(WaitingJob("submitted", wanted), devices):
            where, _, message = problem.partition(": ")
            errors.append(FieldError(where, message))  # the child's path or role, as the allocator labels it
    if errors:
        raise JobValidationError(errors)


def submit_job(job: dict[str, Any] | str | os.PathLike[str], *, settings: Settings | None = None,
               require_known_queue: bool = True, submitted_by: str | None = None,
               idempotency_key: str | None = None, idempotency_ttl: float = 600) -> str:
    """Validate a job (a dict, YAML text or a path) and put it in line for its devices; return its id.

    ``require_known_queue=False`` skips the check that the registered devices can ever run the
    job: it then waits until devices that can register.  ``submitted_by`` (``convoy server``'s caller)
    is recorded on the job and its children.  ``idempotency_key``: a second submission with the same key
    within ``idempotency_ttl`` seconds answers the first one's id and creates nothing (a client that
    resubmits after losing the answer to a server error gets one job, not two).

    The job is recorded and handed to the scheduler in one Redis transaction:
    it is either fully submitted or not at all.  Nothing is published to the
    broker here: the scheduler does that once the job's devices are assigned.
    """
    settings, server = _server(settings)
    if server:  # the server validates, checks the caller's permissions, and records who submitted
        document = read_document(job)
        headers_key = idempotency_key or str(uuid.uuid4())  # a retried request never queues a second job
        return str(server.call("POST", "/api/v1/jobs", document, headers={"Idempotency-Key": headers_key})["job_id"])
    return submit_validated(load_job(job), settings=settings, require_known_queue=require_known_queue,
                            submitted_by=submitted_by, idempotency_key=idempotency_key,
                            idempotency_ttl=idempotency_ttl)


def submit_validated(normalized: dict[str, Any], *, settings: Settings, require_known_queue: bool = True,
                     submitted_by: str | None = None, idempotency_key: str | None = None,
                     idempotency_ttl: float = 600) -> str:
    """:func:`submit_job` of a job ``load_job`` already normalised (``convoy server`` validates once, to
    check the caller's permissions on the normalised job, and submits that)."""
    check_redis(settings)
    client = get_client(settings)
    if require_known_queue:
        _check_satisfiable(normalized, client)
    store = get_store(settings)
    once = clients.submission_key(idempotency_key) if idempotency_key else None
    job_id = str(uuid.uuid4())
    submitted = time.time()
    child_ids: list[str] = []
    deadline = None
    try:
        with store.pipeline(transaction=True) as pipe:
            if once:
                pipe.watch(once)  # a concurrent twin makes execute() fail, and this one answers the twin's id
                earlier = pipe.get(once)
                if earlier:
                    return str(earlier)
                pipe.multi()
                pipe.set(once, job_id, ex=max(1, int(idempotency_ttl)))
            if is_multi(normalized):
                children = normalized["provision_data"]["jobs"]
                child_ids = [str(uuid.uuid4()) for _ in children]
                store.create(job_id, normalized, queue="multi", submitted_by=submitted_by, pipe=pipe)
                for child_id, child in zip(child_ids, children, strict=True):
                    store.create(child_id, child, queue=child.get("job_queue") or GUEST_QUEUE,
                                 parent_job_id=job_id, role=child.get("role"), submitted_by=submitted_by, pipe=pipe)
                deadline = submitted + float(normalized["allocation_timeout"])
            else:
                store.create(job_id, normalized, queue=normalized["job_queue"], submitted_by=submitted_by,
                             pipe=pipe)
            if submitted_by:
                clients.list_job(pipe, submitted_by, job_id, submitted)
            enqueue(pipe, job_id, submitted, deadline)
            pipe.execute()
        if child_ids:
            _create_group(client, job_id, normalized, child_ids)
    except redis.WatchError:
        earlier = client.get(once) if once else None
        if earlier:
            return str(earlier)
        raise ServiceUnavailable(redact_url(settings.redis_url), "could not submit job: try again") from None
    except redis.RedisError as exc:
        raise ServiceUnavailable(redact_url(settings.redis_url), f"could not submit job: {exc}") from None
    return job_id


def _create_group(client: redis.Redis, job_id: str, job: dict[str, Any], child_ids: list[str]) -> None:
    from convoy.coordinator.multinode.group import create_group

    members = {cid: child.get("role") or child.get("job_queue") or GUEST_QUEUE
               for cid, child in zip(child_ids, job["provision_data"]["jobs"], strict=True)}
    create_group(client, job_id, members, timeout=float(job.get("timeouts", {}).get("multinode", 600)))


def job_status(job_id: str, *, settings: Settings | None = None) -> str:
    """The job's state: waiting, provision, allocated, reserve, test, cleanup, complete, cancelled."""
    settings, server = _server(settings)
    if server:
        return str(server.call("GET", f"/api/v1/jobs/{job_id}/status")["state"])
    return get_store(settings).state(job_id)


def job_results(job_id: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """Testflinger-style results: per-phase status and output, device_info, children; LAVA's
    ``test_results`` (suites of cases) for the job and each child (``convoy.config.testresults``
    renders them as JUnit)."""
    settings, server = _server(settings)
    if server:
        return dict(server.call("GET", f"/api/v1/jobs/{job_id}/results"))
    return _job_results(get_store(settings), job_id)


def cancel_job(job_id: str, *, settings: Settings | None = None) -> None:
    """Cancel a job (and, for a multi job, every child); cleanup still runs."""
    settings, server = _server(settings)
    if server:
        server.call("POST", f"/api/v1/jobs/{job_id}/cancel")
        return
    _cancel_job(get_store(settings), job_id, settings)


def extend_reservation(job_id: str, duration: str | float, *, settings: Settings | None = None) -> float:
    """Hold a multi job's reserved devices ``duration`` longer (``"2h"``, seconds); the new expiry (epoch).

    Refused with a clear error beyond this deployment's maximum reservation, or when no reservation holds.
    """
    from convoy.config.durations import DurationError, parse_duration
    from convoy.tasks.parent import extend_reservation as _extend

    settings, server = _server(settings)
    if server:
        return float(server.call("POST", f"/api/v1/jobs/{job_id}/reservation/extend",
                                 {"duration": duration})["until"])
    try:
        seconds = parse_duration(duration, field="duration")
    except DurationError as exc:
        raise ConvoyError(str(exc)) from None
    return _extend(get_store(settings), job_id, seconds, settings)


def release_reservation(job_id: str, *, settings: Settings | None = None) -> None:
    """End a multi job's reservation now: its devices go on to the test phase and cleanup."""
    from convoy.tasks.parent import end_reservation

    settings, server = _server(settings)
    if server:
        server.call("POST", f"/api/v1/jobs/{job_id}/reservation/release")
        return
    store = get_store(settings)
    state = store.state(job_id)
    if not end_reservation(store, job_id, "reservation released by convoy release"):
        raise ConvoyError(f"job {job_id} holds no reservation now (it is {state})")


def wait_for_job(job_id: str, timeout: float | None = None, *, settings: Settings | None = None) -> str:
    """Block until the job reaches a final state; return it.

    Any ``timeout`` works (None: no limit); a Redis restart meanwhile is
    ridden out.  Raises ConvoyError on timeout, ServiceUnavailable when Redis
    stays unreachable until the deadline.
    """
    settings, server = _server(settings)
    if server:
        return _wait_remote(server, job_id, timeout)
    store = get_store(settings)
    try:
        store.state(job_id)  # JobNotFound early
        if not store.wait_until([job_id], lambda: store.state(job_id) in FINAL_STATES, timeout):
            raise ConvoyError(f"job {job_id} still {store.state(job_id)} after {timeout:g}s")
        return store.state(job_id)
    except redis.RedisError as exc:
        raise ServiceUnavailable(redact_url(settings.redis_url), f"{exc} (while waiting for job {job_id})") from None


def job_artifacts(job_id: str, *, settings: Settings | None = None) -> bytes | None:
    """The tar.gz of what the job's test commands left in ``artifacts/`` (entries ``artifacts/...``), or None.

    One job's own archive, as Testflinger serves ``GET /v1/result/<id>/artifact``: a multi job's parent
    and each child have their own (``job_results(...)["children"]`` lists the children).  The record's
    ``artifacts`` field says why there is none (``none``, ``too large: ...``, ``failed: ...``).  Raises
    JobNotFound for an unknown job.
    """
    from convoy.coordinator.state.artifacts import load_artifacts

    settings, server = _server(settings)
    if server:
        data = server.call("GET", f"/api/v1/jobs/{job_id}/artifacts", raw=True)
        return bytes(data) if data else None
    store = get_store(settings)
    store.state(job_id)  # JobNotFound
    return load_artifacts(store.client, job_id)


#: the longest one wait request to convoy server lasts (a longer wait is several requests)
SERVER_WAIT_SLICE = 30.0


def _wait_remote(server: ServerClient, job_id: str, timeout: float | None) -> str:
    """``wait_for_job`` through the server: long polls that each end when the job does (or after a slice)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = SERVER_WAIT_SLICE if deadline is None else min(SERVER_WAIT_SLICE, deadline - time.monotonic())
        state = str(server.call("GET", f"/api/v1/jobs/{job_id}/wait", params={"timeout": max(0.0, remaining)},
                                timeout=remaining + 60)["state"])
        if state in FINAL_STATES:
            return state
        if deadline is not None and time.monotonic() >= deadline:
            raise ConvoyError(f"job {job_id} still {state} after {timeout:g}s")


def live_source(settings: Settings | None = None) -> LiveSource:
    """Where a live view reads jobs: ``convoy server`` in server mode, else the job store."""
    settings, server = _server(settings)
    return ServerSource(server) if server else StoreSource(get_store(settings))


def show_job(job_id: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """The job's record (``convoy show``): document, state, device, children; waiting: its position and
    what it waits for; reserved: when the reservation expires."""
    from datetime import UTC, datetime

    from convoy.tasks.scheduler import waiting_reasons

    settings, server = _server(settings)
    if server:
        return dict(server.call("GET", f"/api/v1/jobs/{job_id}"))
    store = get_store(settings)
    record = store.get(job_id)
    record["children"] = store.children(job_id)
    for _, reason in waiting_reasons(store, [job_id]):
        record["position"] = reason.position
        record["waiting_for"] = reason.message()
    if record.get("reserve_until") and not record.get("step_reserve"):
        expires = datetime.fromtimestamp(float(record["reserve_until"]), UTC)
        record["reservation_expires"] = expires.isoformat(timespec="seconds")
    return record


#: the fields of a job in a listing
LISTED_FIELDS = ("job_id", "state", "job_queue", "created_at", "parent_job_id", "submitted_by")


def job_summaries(store_ids: list[str], *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The listing fields of these jobs, in order (a job removed meanwhile is left out)."""
    store = get_store(settings)
    out = []
    for job_id in store_ids:
        try:
            record = store.get(job_id)
        except JobNotFound:
            continue  # removed by retention meanwhile
        out.append({k: record[k] for k in LISTED_FIELDS if record.get(k) is not None})
    return out


def list_jobs(limit: int = 20, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The newest jobs, newest first (through the server: the caller's own; an admin's: everyone's)."""
    settings, server = _server(settings)
    if server:
        return list(server.call("GET", "/api/v1/jobs", params={"limit": limit}))
    return job_summaries(get_store(settings).newest(limit), settings=settings)


def queues(*, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The queues devices serve: devices online, busy, total, and how many jobs wait."""
    from convoy.coordinator.state.devices import queue_summaries

    settings, server = _server(settings)
    if server:
        return list(server.call("GET", "/api/v1/queues"))
    return [{"queue": s.queue, "online": s.online, "busy": s.busy, "total": s.total, "waiting": len(s.waiting)}
            for s in queue_summaries(get_client(settings))]


def queue_status(queue: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """One queue's devices (name, health, job) and its waiting jobs in the scheduler's order, with why."""
    from convoy.coordinator.state.devices import queue_summaries
    from convoy.tasks.scheduler import waiting_reasons

    settings, server = _server(settings)
    if server:
        return dict(server.call("GET", f"/api/v1/queues/{urllib.parse.quote(queue, safe='')}"))
    client = get_client(settings)
    if not any(s.queue == queue for s in queue_summaries(client)):
        raise ConvoyError(f"no device serves queue {queue!r}")
    devices = [{"name": d.name, "health": d.health, "job_id": d.job_id}
               for d in device_summaries(client) if queue in d.queues]
    waiting = [{"job_id": job.job_id, "priority": job.priority, "reason": reason.message()}
               for job, reason in waiting_reasons(get_store(settings))
               if any(queue in (r.queue, r.device_type) for r in job.requirements)]
    return {"queue": queue, "devices": devices, "waiting": waiting}


def devices(*, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every device (``convoy agents --json``): health, host, queues, type, tags, its job, maintenance."""
    import dataclasses

    settings, server = _server(settings)
    if server:
        return list(server.call("GET", "/api/v1/devices"))
    return [dataclasses.asdict(d) for d in device_summaries(get_client(settings))]
