"""Testflinger's REST v1, the part testflinger-cli uses, served by ``convoy server`` at Testflinger's paths.

``testflinger-cli --server http://convoy:8000 submit|poll|status|results|artifacts|cancel|list-agents``
works against convoy: the same paths, status codes (success is 200; 204 where Testflinger has nothing;
400 for a job id that is not a UUID or a job that cannot be cancelled; 410 for the position of a job
no longer waiting) and JSON shapes (``testflinger_shapes``).  Errors are Testflinger's ``{"message",
"detail"}``; a refused job is a 422 naming each field under ``detail.json`` (convoy's checks: an unknown
queue, a field convoy does not run) or a 403 naming the caller's limit.

Who may do what is convoy's (``access.py``, as for ``/api/v1``): a bearer token from
``/v1/oauth2/token`` (401 for a bad or expired one, so testflinger-cli logs in again), anonymous
callers submit when the server allows it and see only anonymous jobs; another client's job looks
absent (204).  ``POST /oidc/auth-init`` answers 404: testflinger-cli then knows there is no OIDC login.
"""
from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from convoy.coordinator import api
from convoy.coordinator.server import access, auth
from convoy.coordinator.server import testflinger_shapes as shapes
from convoy.coordinator.server.app import PermissionDenied, Unauthorized
from convoy.errors import (
    ConvoyError,
    FieldError,
    JobNotFound,
    JobStateError,
    JobValidationError,
    ServiceUnavailable,
)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(shapes.error_body(message), status_code=status, headers=headers)


def _not_json() -> JSONResponse:
    """400 for a body that is not JSON at all, naming the body (``_schema``) as a 422 names a field."""
    body = shapes.validation_body([FieldError("", "Invalid JSON body.")])
    body["message"] = "Invalid JSON body."
    return JSONResponse(body, status_code=400)


class TestflingerRoute(APIRoute):
    """A route answering errors in Testflinger's shape (``{"message", "detail"}``), not convoy's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except JobValidationError as exc:
                return JSONResponse(shapes.validation_body(exc.errors), status_code=422)
            except PermissionDenied as exc:
                body = shapes.error_body(str(exc))
                body["errors"] = [{"field": e.path, "message": e.message} for e in exc.errors]
                return JSONResponse(body, status_code=403)
            except Unauthorized as exc:
                return _error(401, str(exc), {"WWW-Authenticate": "Bearer"})
            except RequestValidationError as exc:
                if any(e.get("type") == "json_invalid" for e in exc.errors()):
                    return _not_json()
                problems = [FieldError(".".join(str(p) for p in e.get("loc", ())[1:]), str(e.get("msg")))
                            for e in exc.errors()]
                return JSONResponse(shapes.validation_body(problems), status_code=422)
            except HTTPException as exc:  # starlette's own: a body it cannot parse, ...
                if exc.status_code == 400:
                    return _not_json()
                return _error(exc.status_code, str(exc.detail), exc.headers)
            except ServiceUnavailable as exc:
                return _error(503, str(exc))
            except JobNotFound as exc:
                return _error(404, str(exc))
            except ConvoyError as exc:
                return _error(400, str(exc))

        return run


router = APIRouter(route_class=TestflingerRoute, tags=["testflinger"])
NO_CONTENT = 204


def caller(request: Request) -> auth.Identity:
    """The caller of the ``Authorization`` header (``Bearer <token>`` or the bare token): 401 for a bad one."""
    return access.caller_for_header(request, request.headers.get("authorization"))


def _visible(request: Request, who: auth.Identity, job_id: str) -> bool:
    try:
        access.check_visible(request, who, job_id)
    except JobNotFound:
        return False
    return True


def _bad_id(job_id: str, message: str = "Invalid job_id specified") -> JSONResponse | None:
    return None if shapes.is_uuid(job_id) else _error(400, message)


@router.post("/v1/job")
def submit(request: Request, job: Annotated[Any, Body()] = None,
           idempotency_key: Annotated[str | None, Header()] = None) -> dict[str, str]:
    """Submit a job (Testflinger's job document; convoy's multi jobs too): ``{"job_id"}``."""
    who = caller(request)
    if job is None:
        raise JobValidationError([FieldError("", "Invalid input type.")])
    return {"job_id": access.submit_as(request, who, job, idempotency_key=idempotency_key)}


@router.get("/v1/job/{job_id}", response_model=None)
def job(request: Request, job_id: str) -> dict[str, Any] | Response:
    """The job's document in Testflinger's job shape; 204 for a job this caller cannot see."""
    who = caller(request)
    if bad := _bad_id(job_id):
        return bad
    if not _visible(request, who, job_id):
        return Response(status_code=NO_CONTENT)
    document = access.store_of(request).get(job_id).get("document") or {}
    return shapes.job_shape(job_id, document)


@router.get("/v1/result/{job_id}", response_model=None)
def result(request: Request, job_id: str) -> dict[str, Any] | Response:
    """``job_state``, ``<phase>_status`` and ``<phase>_output`` (and convoy's own results beside)."""
    who = caller(request)
    if bad := _bad_id(job_id):
        return bad
    if not _visible(request, who, job_id):
        return Response(status_code=NO_CONTENT)
    return shapes.result_shape(api.job_results(job_id, settings=access.server_config(request).settings))


@router.get("/v1/result/{job_id}/log/{log_type}", response_model=None)
def log(request: Request, job_id: str, log_type: str) -> dict[str, Any] | Response:
    """The job's output from fragment ``start_fragment`` on (``start_timestamp``, ``phase`` narrow it):
    fragments are numbered across the job, so the next call asks for the last number + 1."""
    who = caller(request)
    if log_type not in shapes.LOG_TYPES:
        return _error(404, "Invalid log type")
    if bad := _bad_id(job_id, "Invalid job id\n"):
        return bad
    start, since, phase, problems = shapes.parse_log_query(request.query_params)
    if problems:
        return JSONResponse({"message": problems, "detail": {}}, status_code=400)
    fragments: list[shapes.Fragment] = []
    if log_type == "output" and _visible(request, who, job_id):
        events = access.store_of(request).read_events({job_id: "0-0"})
        fragments = shapes.fragments_of((event_id, fields) for _, event_id, fields in events)
    return shapes.log_body(fragments, log_type, start, since, phase)


@router.get("/v1/job/{job_id}/position", response_model=None)
def position(request: Request, job_id: str) -> Response:
    """How many jobs wait before this one for its queues, in convoy's scheduling order (0: it is next),
    as a bare number; 410 once it no longer waits (or for a job this caller cannot see)."""
    who = caller(request)
    if bad := _bad_id(job_id):
        return bad
    if not _visible(request, who, job_id):
        return _error(410, shapes.NOT_WAITING)
    from convoy.coordinator.scheduling.allocator import ordered
    from convoy.tasks.scheduler import Scheduler, app

    plans, _ = Scheduler(access.store_of(request), app).read_waiting()  # a look, as waiting_reasons takes
    line = [(job.job_id, [r.queue or f"device_type:{r.device_type}" for r in job.requirements])
            for job in ordered(plan.job for plan in plans.values())]
    ahead = shapes.jobs_ahead(job_id, line)
    return _error(410, shapes.NOT_WAITING) if ahead is None else JSONResponse(ahead)


@router.post("/v1/job/{job_id}/action", response_model=None)
def action(request: Request, job_id: str, body: Annotated[Any, Body()] = None) -> Response:
    """``{"action": "cancel"}``: cancel the caller's job (a token is needed); 400 for a job that is
    already over (or that this caller cannot see); 422 for any other action."""
    who = caller(request)
    if errors := shapes.action_errors(body):
        return JSONResponse(shapes.validation_body(errors), status_code=422)
    if bad := _bad_id(job_id, "Invalid job id\n"):
        return bad
    if who.anonymous:
        raise Unauthorized("cancelling a job needs a token: get one at POST /v1/oauth2/token")
    try:
        access.check_changeable(request, who, job_id)
        api.cancel_job(job_id, settings=access.server_config(request).settings)
    except JobNotFound:
        return _error(400, f"Job {job_id} not found")
    except JobStateError:
        return _error(400, shapes.ALREADY_ENDED)
    return JSONResponse("OK")


@router.get("/v1/result/{job_id}/artifact", response_model=None)
def artifact(request: Request, job_id: str) -> Response:
    """The tar.gz of what the job's test commands left in ``artifacts/``; 204 when there is none."""
    who = caller(request)
    if bad := _bad_id(job_id, "Invalid job id\n"):
        return bad
    if not _visible(request, who, job_id):
        return Response(status_code=NO_CONTENT)
    data = api.job_artifacts(job_id, settings=access.server_config(request).settings)
    if not data:
        return Response(status_code=NO_CONTENT)
    return Response(data, media_type="application/gzip",
                    headers={"Content-Disposition": 'attachment; filename="artifact.tar.gz"'})


@router.get("/v1/queues/{queue}/agents", response_model=None)
def queue_agents(request: Request, queue: str) -> list[dict[str, Any]] | Response:
    """The devices serving ``queue`` as Testflinger agents; 404 for a queue no device serves."""
    who = caller(request)
    from convoy.coordinator.state.devices import device_summaries, known_queues

    client = access.redis_of(request)
    if queue not in known_queues(client):
        return _error(404, f"Queue '{queue}' does not exist.")
    devices = [d for d in device_summaries(client) if queue in d.queues]
    if not devices:
        return Response(status_code=NO_CONTENT)
    store = access.store_of(request)
    states = store.states([d.job_id for d in devices if d.job_id])
    mine = {j for j in states if _visible(request, who, j)}  # another client's job: its state, not its id
    return [shapes.agent_shape(d.name, d.health, d.queues, d.host, d.connector,
                               d.job_id if d.job_id in mine else "",
                               states.get(d.job_id) if d.job_id else None, d.maintenance) for d in devices]


@router.post("/oidc/auth-init", response_model=None)
def oidc_auth_init() -> Response:
    """No OIDC login here: 404 tells testflinger-cli to use client credentials (or none)."""
    return _error(404, "OIDC login is not enabled on this server: use client credentials")
