"""The routes of ``convoy server``: a thin layer over ``coordinator/api.py`` and the state readers.

Every job route first checks that the caller may see the job (``auth.may_see``); a job the caller may not
see answers 404, exactly like a job that does not exist, so ids of other clients' jobs leak nothing.
"""
from __future__ import annotations

import asyncio
import dataclasses
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from convoy.coordinator import api
from convoy.coordinator.follow import StoreSource
from convoy.coordinator.server import access, auth
from convoy.coordinator.state import clients
from convoy.coordinator.state.finals import FinalWatcher
from convoy.errors import ConvoyError, Unauthorized

router = APIRouter()
_config, _redis, _store = access.server_config, access.redis_of, access.store_of
_visible, _changeable = access.check_visible, access.check_changeable


def identity(request: Request, authorization: Annotated[str | None, Header()] = None) -> auth.Identity:
    """The caller: the client of a valid bearer token, anonymous without one; 401 for a bad token."""
    return access.caller_for_header(request, authorization)


Caller = Annotated[auth.Identity, Depends(identity)]


def signed_in(who: Caller) -> auth.Identity:
    if who.anonymous:
        raise Unauthorized("this needs a token: get one at POST /v1/oauth2/token")
    return who


Client = Annotated[auth.Identity, Depends(signed_in)]


# --- credentials ------------------------------------------------------------------
class TokenRequest(BaseModel):
    client_id: str
    secret_key: str


class RefreshRequest(BaseModel):
    refresh_token: str


class Tokens(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_token: str | None = None


@router.post("/v1/oauth2/token", response_model=Tokens, response_model_exclude_none=True, tags=["credentials"])
def token(request: Request, body: Annotated[TokenRequest | None, Body()] = None,
          authorization: Annotated[str | None, Header()] = None) -> Tokens:
    """Exchange a client id and secret (HTTP Basic ``client_id:secret``, or JSON) for a bearer token."""
    creds = auth.basic_credentials(authorization) or ((body.client_id, body.secret_key) if body else None)
    config = _config(request)
    client = clients.authenticate(_redis(request), *creds) if creds else None
    if client is None:
        raise Unauthorized("invalid client id or secret")
    access, refresh = clients.issue_tokens(_redis(request), client.client_id, config.access_ttl, config.refresh_ttl)
    return Tokens(access_token=access, expires_in=config.access_ttl, refresh_token=refresh)


@router.post("/v1/oauth2/refresh", response_model=Tokens, response_model_exclude_none=True, tags=["credentials"])
def refresh(request: Request, body: RefreshRequest) -> Tokens:
    """A new access token for a refresh token."""
    config = _config(request)
    access = clients.refresh_access(_redis(request), body.refresh_token, config.access_ttl)
    if access is None:
        raise ConvoyError("invalid or expired refresh token: log in again at POST /v1/oauth2/token")
    return Tokens(access_token=access, expires_in=config.access_ttl)


# --- jobs -----------------------------------------------------------------------
class Submitted(BaseModel):
    job_id: str
    submitted_by: str


class JobState(BaseModel):
    job_id: str
    state: str


@router.post("/api/v1/jobs", response_model=Submitted, tags=["jobs"])
def submit(request: Request, who: Caller, job: Annotated[dict[str, Any], Body()],
           idempotency_key: Annotated[str | None, Header()] = None) -> Submitted:
    """Submit a job document (JSON; Testflinger or LAVA form, as ``convoy submit`` takes as YAML).

    422 names every invalid field; 403 names every limit of the caller the job exceeds; nothing is queued
    in either case.  With an ``Idempotency-Key`` header, sending the same document again (after losing
    the answer) returns the first job's id instead of queueing a second job."""
    job_id = access.submit_as(request, who, job, idempotency_key=idempotency_key)
    return Submitted(job_id=job_id, submitted_by=who.name)


@router.get("/api/v1/jobs", tags=["jobs"])
def jobs(request: Request, who: Client, limit: int = 20) -> list[dict[str, Any]]:
    """The caller's newest top-level jobs (an admin: everyone's jobs, children too), newest first."""
    limit = max(1, min(limit, 1000))
    ids = _store(request).newest(limit) if who.admin else clients.client_job_ids(_redis(request), who.name, limit)
    return api.job_summaries(ids, settings=_config(request).settings)


@router.get("/api/v1/jobs/{job_id}", tags=["jobs"])
def show(request: Request, who: Caller, job_id: str) -> dict[str, Any]:
    """The job's record (as ``convoy show``): document, state, device, children; waiting, its position."""
    _visible(request, who, job_id)
    return api.show_job(job_id, settings=_config(request).settings)


@router.get("/api/v1/jobs/{job_id}/labels", tags=["jobs"])
def labels(request: Request, who: Caller, job_id: str) -> dict[str, str]:
    """Short names of the job and its children for a live view: ``job``, ``server#1``, ``client#2`` ..."""
    _visible(request, who, job_id)
    return StoreSource(_store(request)).labels(job_id)


@router.get("/api/v1/jobs/{job_id}/live", tags=["jobs"])
def live(request: Request, who: Caller, job_id: str, after: Annotated[list[str] | None, Query()] = None,
         calls: int = 0, wait_ms: int = 1000) -> dict[str, Any]:
    """One step of a live view (a long poll): the events of the job and its children after the given
    positions (``after=<job id>:<event id>``, ``0-0`` from the start), waiting up to ``wait_ms`` (at most
    1000) for one; every such job's state; the group's MultiNode calls after the first ``calls``."""
    _visible(request, who, job_id)
    store = _store(request)
    family = {job_id, *store.children(job_id)}
    positions: dict[str, str] = {}
    for item in after or [f"{job_id}:0-0"]:
        jid, sep, event_id = item.rpartition(":")
        if not sep or jid not in family:
            raise ConvoyError(f"after={item!r}: want <job id>:<event id> of this job or one of its children")
        positions[jid] = event_id
    step = StoreSource(store).step(job_id, positions, max(0, calls), max(0, min(wait_ms, 1000)) or None)
    return step.to_json()


@router.get("/api/v1/jobs/{job_id}/artifacts", tags=["jobs"], response_class=Response,
            responses={200: {"content": {"application/gzip": {}}}, 204: {"description": "no artifacts"}})
def artifacts(request: Request, who: Caller, job_id: str) -> Response:
    """The tar.gz of the job's ``artifacts/`` (204: the job left none)."""
    _visible(request, who, job_id)
    data = api.job_artifacts(job_id, settings=_config(request).settings)
    return Response(data, media_type="application/gzip") if data else Response(status_code=204)


@router.get("/api/v1/jobs/{job_id}/status", response_model=JobState, tags=["jobs"])
def status(request: Request, who: Caller, job_id: str) -> JobState:
    """The job's state: waiting, provision, allocated, reserve, test, cleanup, complete, cancelled."""
    _visible(request, who, job_id)
    return JobState(job_id=job_id, state=api.job_status(job_id, settings=_config(request).settings))


_finals_lock = threading.Lock()


def _finals(request: Request) -> FinalWatcher:
    """The app's one watcher of final states (made on first use, closed with the app)."""
    with _finals_lock:
        watcher: FinalWatcher | None = getattr(request.app.state, "finals", None)
        if watcher is None:
            watcher = request.app.state.finals = FinalWatcher(_redis(request), name="convoy-server-finals")
        return watcher


@router.get("/api/v1/jobs/{job_id}/wait", response_model=JobState, tags=["jobs"])
async def wait(request: Request, job_id: str, timeout: float = 30.0,
               authorization: Annotated[str | None, Header()] = None) -> JobState:
    """A long poll: answers when the job's state is final, or after ``timeout`` seconds (at most 60) with
    its state then (``wait_for_job`` asks again).  A waiting request holds no thread and no Redis
    connection of its own: one watcher serves every waiter (``state/finals.py``)."""
    who = await run_in_threadpool(identity, request, authorization)
    await run_in_threadpool(_visible, request, who, job_id)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()

    def finished(state: str) -> None:
        loop.call_soon_threadsafe(lambda: None if done.done() else done.set_result(state))

    unwatch = await run_in_threadpool(_finals(request).watch, job_id, finished)
    try:
        state = await asyncio.wait_for(done, max(0.0, min(timeout, 60.0)))
    except TimeoutError:
        state = await run_in_threadpool(_store(request).state, job_id)
    finally:
        unwatch()
    return JobState(job_id=job_id, state=state)


@router.get("/api/v1/jobs/{job_id}/results", tags=["jobs"])
def results(request: Request, who: Caller, job_id: str) -> dict[str, Any]:
    """The job's results (as ``convoy results``): per-phase status and output, children, test_results."""
    _visible(request, who, job_id)
    return api.job_results(job_id, settings=_config(request).settings)


@router.post("/api/v1/jobs/{job_id}/cancel", response_model=JobState, tags=["jobs"])
def cancel(request: Request, who: Client, job_id: str) -> JobState:
    """Cancel the caller's job (a multi job: every child); cleanup still runs."""
    _changeable(request, who, job_id)
    api.cancel_job(job_id, settings=_config(request).settings)
    return JobState(job_id=job_id, state=api.job_status(job_id, settings=_config(request).settings))


class Extend(BaseModel):
    duration: str | float


class Reservation(BaseModel):
    job_id: str
    expires: str
    until: float


@router.post("/api/v1/jobs/{job_id}/reservation/extend", response_model=Reservation, tags=["jobs"])
def reserve_extend(request: Request, who: Client, job_id: str, body: Extend) -> Reservation:
    """Hold the job's reserved devices ``duration`` longer (``3600``, ``"2h"``), within the caller's limit."""
    _changeable(request, who, job_id)
    settings = _config(request).settings
    document = _store(request).get(job_id).get("document") or {}
    cap = auth.reservation_cap(who, document, settings.max_reservation)
    until = api.extend_reservation(job_id, body.duration, settings=dataclasses.replace(settings, max_reservation=cap))
    return Reservation(job_id=job_id, expires=datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds"),
                       until=until)


@router.post("/api/v1/jobs/{job_id}/reservation/release", response_model=JobState, tags=["jobs"])
def reserve_release(request: Request, who: Client, job_id: str) -> JobState:
    """End the job's reservation now: it goes on to its test phase and cleanup."""
    _changeable(request, who, job_id)
    api.release_reservation(job_id, settings=_config(request).settings)
    return JobState(job_id=job_id, state=api.job_status(job_id, settings=_config(request).settings))


# --- the lab --------------------------------------------------------------------
@router.get("/api/v1/queues", tags=["lab"])
def queues(request: Request) -> list[dict[str, Any]]:
    """The queues devices serve: devices online, busy, total, and how many jobs wait."""
    return api.queues(settings=_config(request).settings)


@router.get("/api/v1/queues/{queue}", tags=["lab"])
def queue_status(request: Request, who: Caller, queue: str) -> dict[str, Any]:
    """One queue's devices and its waiting jobs in the scheduler's order, with why each waits (the jobs
    of other clients show as ``hidden``)."""
    status = api.queue_status(queue, settings=_config(request).settings)
    _hide_others_jobs(request, who, status["waiting"] + status["devices"])
    return status


def _hide_others_jobs(request: Request, who: auth.Identity, items: list[dict[str, Any]]) -> None:
    """Replace the ids of jobs ``who`` may not see with ``hidden`` (a listing names only the caller's jobs)."""
    if who.admin:
        return
    r = _redis(request)
    for item in items:
        if item.get("job_id") and not auth.may_see(who, clients.submitted_by(r, item["job_id"])):
            item["job_id"] = "hidden"


@router.get("/api/v1/devices", tags=["lab"])
def devices(request: Request, who: Caller) -> list[dict[str, Any]]:
    """Every device (as ``convoy agents --json``): health, host, queues, type, tags, its job (another
    client's job shows as ``hidden``)."""
    listed = api.devices(settings=_config(request).settings)
    _hide_others_jobs(request, who, listed)
    return listed


@router.get("/", tags=["lab"])
def root(request: Request) -> dict[str, str]:
    """What this server is, and where its API description is."""
    return {"service": "convoy", "version": request.app.version, "openapi": "/openapi.json"}

