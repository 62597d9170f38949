"""convoy's Python API: submit a job, follow it, cancel it, read its results.

``submit_job`` validates the whole document before anything is stored or
queued; a job is either fully recorded and queued or not at all.
"""
from __future__ import annotations

import os
import uuid
from typing import Any

import redis
from celery.canvas import Signature

from convoy.config.jobs import is_guest, is_multi, load_job
from convoy.config.lifecycle import FINAL_STATES, JobState, Outcome, Phase
from convoy.config.settings import Settings, load_settings
from convoy.coordinator.results import job_results as _job_results
from convoy.coordinator.scheduling.feasibility import feasible
from convoy.coordinator.scheduling.model import Device, Requirement, WaitingJob
from convoy.coordinator.state.connection import check_redis, get_client, get_store
from convoy.coordinator.state.devices import device_summaries, known_queues
from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.urls import redact_url
from convoy.errors import ConvoyError, FieldError, JobValidationError, ServiceUnavailable
from convoy.tasks import canvas
from convoy.tasks.cancel import cancel_job as _cancel_job
from convoy.tasks.celery import app


def _requirements(job: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, queue) of every device the job needs, in the job's order (guests need none)."""
    if not is_multi(job):
        return [("job_queue", job["job_queue"])]
    return [(f"provision_data.jobs[{i}].job_queue", child["job_queue"])
            for i, child in enumerate(job["provision_data"]["jobs"]) if not is_guest(child)]


def _check_satisfiable(job: dict[str, Any], client: redis.Redis) -> None:
    """Refuse, before anything is stored, a job the registered devices can never run.

    Every registered device counts, whatever its health (a busy or offline
    device may serve the job later): an unknown queue is named with the
    known ones; a job needing more devices of a queue than are registered is
    named by the child that can never get one (the allocator's feasibility
    check on the device registry, Hall's condition included).
    """
    known = known_queues(client)
    wanted = _requirements(job)
    errors = [
        FieldError(path, f"no device serves queue {queue!r} (known queues: {', '.join(sorted(known)) or 'none'})")
        for path, queue in wanted if queue not in known
    ]
    if not errors:
        devices = [Device(name=d.name, queues=frozenset(d.queues)) for d in device_summaries(client)]
        needs = WaitingJob("submitted", tuple(Requirement(queue=queue, label=path.removesuffix(".job_queue"))
                                             for path, queue in wanted))
        for problem in feasible(needs, devices):
            where, _, message = problem.partition(": ")
            errors.append(FieldError(where, message))  # the child's path, as the allocator labels it
    if errors:
        raise JobValidationError(errors)


def submit_job(job: dict[str, Any] | str | os.PathLike[str], *, settings: Settings | None = None,
               require_known_queue: bool = True) -> str:
    """Validate and queue a job (a dict, YAML text or a path); return its id."""
    settings = settings or load_settings()
    normalized = load_job(job)
    check_redis(settings)
    client = get_client(settings)
    if require_known_queue:
        _check_satisfiable(normalized, client)
    store = get_store(settings)
    job_id = str(uuid.uuid4())
    pipe = store.pipeline(transaction=True)
    if is_multi(normalized):
        children = normalized["provision_data"]["jobs"]
        child_ids = [str(uuid.uuid4()) for _ in children]
        store.create(job_id, normalized, queue="multi", pipe=pipe)
        for child_id, child in zip(child_ids, children, strict=True):
            store.create(child_id, child, queue=child.get("job_queue") or canvas.GUEST_QUEUE, parent_job_id=job_id,
                         role=child.get("role"), pipe=pipe)
        signature = canvas.multi_job(app, job_id, normalized, child_ids, settings)
    else:
        child_ids = []
        store.create(job_id, normalized, queue=normalized["job_queue"], pipe=pipe)
        signature = canvas.single_job(app, job_id, normalized)
    pipe.execute()
    if child_ids:
        _create_group(client, job_id, normalized, child_ids)
    _dispatch(store, job_id, child_ids, normalized, signature, settings)
    return job_id


def _create_group(client: redis.Redis, job_id: str, job: dict[str, Any], child_ids: list[str]) -> None:
    from convoy.coordinator.multinode.group import create_group

    members = {cid: child.get("role") or child.get("job_queue") or canvas.GUEST_QUEUE
               for cid, child in zip(child_ids, job["provision_data"]["jobs"], strict=True)}
    create_group(client, job_id, members, timeout=float(job.get("timeouts", {}).get("multinode", 600)))


def _dispatch(store: JobStore, job_id: str, child_ids: list[str], job: dict[str, Any],
              signature: Signature, settings: Settings) -> None:
    """Publish the job's messages; on failure leave nothing runnable behind."""
    try:
        with store.dispatch_lock():
            if child_ids:
                store.transition(job_id, JobState.PROVISION, allowed_from=[JobState.WAITING])
                store.start_phase(job_id, Phase.PROVISION)
            signature.apply_async()
            if child_ids:
                canvas.allocation_timeout(app, job_id, job["allocation_timeout"], settings).apply_async()
    except Exception as exc:  # the broker or Redis failed mid-way: cancel what was recorded
        for jid in [job_id, *child_ids]:
            try:
                store.transition(jid, JobState.CANCELLED, message=f"not queued: {exc}", outcome=Outcome.CANCELLED)
            except redis.RedisError:
                pass
        raise ServiceUnavailable(redact_url(settings.effective_broker_url), f"could not queue job: {exc}") from None


def job_status(job_id: str, *, settings: Settings | None = None) -> str:
    """The job's state: waiting, provision, allocated, reserve, test, cleanup, complete, cancelled."""
    return get_store(settings).state(job_id)


def job_results(job_id: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """Testflinger-style results: per-phase status and output, device_info, children."""
    return _job_results(get_store(settings), job_id)


def cancel_job(job_id: str, *, settings: Settings | None = None) -> None:
    """Cancel a job (and, for a multi job, every child); cleanup still runs."""
    _cancel_job(get_store(settings), job_id, settings or load_settings())


def wait_for_job(job_id: str, timeout: float | None = None, *, settings: Settings | None = None) -> str:
    """Block until the job reaches a final state; return it.

    Any ``timeout`` works (None: no limit); a Redis restart meanwhile is
    ridden out.  Raises ConvoyError on timeout, ServiceUnavailable when Redis
    stays unreachable until the deadline.
    """
    settings = settings or load_settings()
    store = get_store(settings)
    try:
        store.state(job_id)  # JobNotFound early
        if not store.wait_until([job_id], lambda: store.state(job_id) in FINAL_STATES, timeout):
            raise ConvoyError(f"job {job_id} still {store.state(job_id)} after {timeout:g}s")
        return store.state(job_id)
    except redis.RedisError as exc:
        raise ServiceUnavailable(redact_url(settings.redis_url), f"{exc} (while waiting for job {job_id})") from None
