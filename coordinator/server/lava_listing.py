"""``lavacli jobs list`` and ``jobs validate``: the caller's jobs in LAVA's words, a definition checked.

Listing follows convoy's rule (``auth.py``): a client lists the jobs it submitted, an admin every job, an
anonymous caller none (401).  LAVA has no MultiNode parent job: a MultiNode job is listed as its
sub-jobs (``N.0``, ``N.1``, ...).  Only the newest :data:`SCANNED` jobs are looked at.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from convoy.config.jobs import load_job
from convoy.config.yamlsafe import read_document
from convoy.coordinator.server import access
from convoy.coordinator.server.lava_methods import Call, details
from convoy.coordinator.state import clients
from convoy.errors import ConvoyError, JobNotFound, JobValidationError

#: how many of the newest jobs a listing looks at (filters apply within them)
SCANNED = 500
MAX_LIMIT = 100


def _job_ids(call: Call) -> list[str]:
    """The caller's jobs, newest first, each MultiNode job as its sub-jobs in LAVA's order."""
    store, redis = access.store_of(call.request), access.redis_of(call.request)
    if call.who.anonymous:
        raise access.Unauthorized("listing jobs needs a token (user:token in lavacli's URI)")
    if call.who.admin:
        ids = store.newest(SCANNED)
        queues = store.fields(ids, "job_queue")
        return [j for j, row in zip(ids, queues, strict=True) if row["job_queue"] not in (None, "multi")]
    out: list[str] = []
    for job_id in clients.client_job_ids(redis, call.who.name, SCANNED):
        out.extend(store.children(job_id) or [job_id])
    return out


def _name_filter(value: Any) -> str | None:
    return str(value).strip().lower() or None if value not in (None, "", False) else None


def jobs_list(call: Call, state: Any = None, health: Any = None, start: Any = 0, limit: Any = 25,
              since: Any = None, verbose: Any = False, *_: Any) -> list[dict[str, Any]]:
    """``scheduler.jobs.list``: the caller's jobs newest first, filtered by LAVA state and health names
    (``RUNNING``, ``COMPLETE``, any case) and by ``since`` (ended in the last N minutes), ``start`` skipped,
    at most ``limit``; each with id, description, device_type, health, state, submitter (``verbose``:
    also actual_device, start_time, end_time, error_msg, error_type)."""
    want_state, want_health = _name_filter(state), _name_filter(health)
    try:
        skip, count = max(0, int(start or 0)), max(1, min(int(limit or 25), MAX_LIMIT))
        minutes = int(since or 0)
    except (TypeError, ValueError):
        raise ConvoyError("start, limit and since must be numbers") from None
    after = datetime.now(UTC) - timedelta(minutes=minutes) if minutes > 0 else None
    rows: list[dict[str, Any]] = []
    for job_id in _job_ids(call):
        try:
            job = details(call, job_id)
        except JobNotFound:
            continue  # removed meanwhile
        if (want_state and job["state"].lower() != want_state) or \
                (want_health and job["health"].lower() != want_health):
            continue
        if after and (job["end_time"] is None or _utc(job["end_time"].value) < after):
            continue
        rows.append(job)
        if len(rows) >= skip + count:
            break
    keep = ["id", "description", "device_type", "health", "state", "submitter"]
    if verbose:
        keep += ["start_time", "end_time", "error_msg", "error_type"]
    return [{**{k: job[k] for k in keep}, **({"actual_device": job["device"]} if verbose else {})}
            for job in rows[skip:skip + count]]


def _utc(value: str) -> datetime:
    return datetime.strptime(value, "%Y%m%dT%H:%M:%S").replace(tzinfo=UTC)


def jobs_validate(call: Call, definition: Any, strict: Any = False) -> dict[str, Any]:
    """``scheduler.jobs.validate``: ``{}`` for a job convoy would take, else the first problem as LAVA's
    ``{"path", "msg"}`` (nothing is queued; permissions are checked at submit)."""
    if not isinstance(definition, str):
        return {"path": "", "msg": "the definition must be YAML text"}
    try:
        load_job(read_document(definition.encode("utf-8")))  # bytes: a str could name a server file
    except JobValidationError as exc:
        first = exc.errors[0] if exc.errors else None
        return {"path": first.path if first else "", "msg": first.message if first else str(exc)}
    except ConvoyError as exc:
        return {"path": "", "msg": str(exc)}
    return {}


METHODS = {"scheduler.jobs.list": jobs_list, "scheduler.jobs.validate": jobs_validate}
