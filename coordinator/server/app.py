"""``convoy server``: the HTTP front door, served at the root of its host (``create_app``).

Why FastAPI on uvicorn: FastAPI is a well-kept ASGI framework whose OpenAPI description
(``/openapi.json``, browsable at ``/docs``) is generated from the route code and models themselves, so
it cannot drift from what the server does; uvicorn is its usual, well-kept ASGI server.  Both are small
pure-Python installs on top of pydantic and starlette.  The routes are plain (non-async) functions:
FastAPI runs them in its thread pool, so the blocking Redis calls of ``coordinator/api.py`` stay as they
are and the server is a thin layer over them.

What it serves (``routes.py``): convoy's own JSON API under ``/api/v1/`` (submit, status, results,
show, cancel, reservation extend/release, jobs, queues, devices) and the client-credentials login at
Testflinger's paths ``/v1/oauth2/token`` and ``/v1/oauth2/refresh``.  Rules for who sees what:
``auth.py``.  Errors are JSON ``{"detail": message}``; an invalid or refused job also carries
``errors: [{"field", "message"}]`` (422 invalid, 403 above a permission limit).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from convoy.config.settings import Settings, load_settings
from convoy.errors import (
    ConvoyError,
    JobNotFound,
    JobStateError,
    JobValidationError,
    PermissionDenied,
    ServiceUnavailable,
    Unauthorized,
)

#: how long an access token lives (seconds; Testflinger's are short-lived too), and a refresh token
ACCESS_TTL = 30 * 60
REFRESH_TTL = 30 * 86400


@dataclass(frozen=True)
class ServerConfig:
    """What one server instance needs besides the routes."""

    settings: Settings
    access_ttl: int = ACCESS_TTL
    refresh_ttl: int = REFRESH_TTL
    #: whether a caller without a token may submit (with the anonymous defaults)
    anonymous_submit: bool = True
    #: how long (seconds) a resubmitted identical document answers the first job (``access.submit_as``)
    idempotency_ttl: float = 600


def _field_errors(errors: list) -> list[dict[str, str]]:
    return [{"field": e.path, "message": e.message} for e in errors]


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app of ``convoy server`` (``config`` defaults to the environment's settings)."""
    from importlib.metadata import version

    from convoy.coordinator.server import lavarpc, routes, testflinger

    config = config or ServerConfig(dataclasses.replace(load_settings(), server_url=None))
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        finals = getattr(app.state, "finals", None)  # routes.wait's watcher, if a wait made one
        if finals is not None:
            finals.close()

    app = FastAPI(title="convoy", version=version("convoy"), lifespan=lifespan,
                  description="convoy's JSON API: submit and follow multi-device test jobs, with credentials.")
    app.state.config = config
    app.include_router(routes.router)
    app.include_router(testflinger.router)
    app.include_router(lavarpc.router)

    @app.exception_handler(ConvoyError)
    def convoy_error(request: Request, exc: ConvoyError) -> JSONResponse:
        headers = None
        if isinstance(exc, JobValidationError):
            return JSONResponse({"detail": str(exc), "errors": _field_errors(exc.errors)}, status_code=422)
        if isinstance(exc, PermissionDenied):
            return JSONResponse({"detail": str(exc), "errors": _field_errors(exc.errors)}, status_code=403)
        if isinstance(exc, Unauthorized):
            status, headers = 401, {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, JobNotFound):
            status = 404
        elif isinstance(exc, JobStateError):
            status = 409
        elif isinstance(exc, ServiceUnavailable):
            status = 503
        else:
            status = 400
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return app
