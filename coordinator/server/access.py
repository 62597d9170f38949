"""What every front of ``convoy server`` shares: the request's Redis, its caller, who may see or change a
job, and submitting a job as the caller.

convoy's own JSON API (``routes.py``), Testflinger's REST v1 (``testflinger.py``) and LAVA's XML-RPC
(``lavarpc.py``) all go through these, so a permission holds the same whichever protocol a client speaks.
"""
from __future__ import annotations

import copy
from typing import Any

import redis
from fastapi import Request

from convoy.config.jobs import validate_job
from convoy.config.yamlsafe import read_document
from convoy.coordinator import api
from convoy.coordinator.server import auth
from convoy.coordinator.server.app import ServerConfig
from convoy.coordinator.state import clients
from convoy.coordinator.state.connection import get_client, get_store
from convoy.coordinator.state.jobs import JobStore
from convoy.errors import JobNotFound, PermissionDenied, Unauthorized


def server_config(request: Request) -> ServerConfig:
    config: ServerConfig = request.app.state.config
    return config


def redis_of(request: Request) -> redis.Redis:
    return get_client(server_config(request).settings)


def store_of(request: Request) -> JobStore:
    return get_store(server_config(request).settings)


def caller_for_token(request: Request, token: str | None) -> auth.Identity:
    """The client of a valid access token; anonymous for no token; 401 (``Unauthorized``) for a bad one."""
    if not token:
        return auth.Identity()
    client = clients.client_for_token(redis_of(request), token)
    if client is None:
        raise Unauthorized("invalid or expired token: get one at POST /v1/oauth2/token")
    return auth.Identity(client)


def caller_for_header(request: Request, header: str | None) -> auth.Identity:
    """The caller of an ``Authorization`` header (``Bearer <token>``, or the bare token as testflinger-cli
    sends it): anonymous without one, 401 for a malformed or bad one."""
    token = auth.bearer_token(header)
    if header and not token:
        raise Unauthorized("invalid or expired token: get one at POST /v1/oauth2/token")
    return caller_for_token(request, token)


def check_visible(request: Request, who: auth.Identity, job_id: str) -> str | None:
    """``JobNotFound`` unless the job exists and ``who`` may see it (another client's job looks absent);
    returns who submitted it.  One round trip: the job's state and submitter together."""
    (record,) = store_of(request).fields([job_id], "state", "submitted_by")
    if record["state"] is None:
        raise JobNotFound(job_id)
    if not auth.may_see(who, record["submitted_by"]):
        raise JobNotFound(job_id)
    return record["submitted_by"]


def check_changeable(request: Request, who: auth.Identity, job_id: str) -> None:
    """As :func:`check_visible`, and ``who`` may cancel or change the job (its own, with a token)."""
    if not auth.may_change(who, check_visible(request, who, job_id)):
        raise Unauthorized("changing a job needs a token")


def submit_as(request: Request, who: auth.Identity, job: dict[str, Any] | str, *,
              idempotency_key: str | None = None) -> str:
    """Submit ``job`` (a document, or its YAML/JSON text) for ``who``; its id.

    422 (``JobValidationError``) for an invalid job, 403 (``PermissionDenied``) naming every limit it
    exceeds (priority, reservation, restricted queue; a child's field path for a child): nothing is queued
    in either case.  ``idempotency_key`` (the client's, or a digest of the document): the same caller
    submitting with the same key again within the server's ``idempotency_ttl`` gets the first job's id and
    nothing new is queued (a resubmission after a lost answer)."""
    config = server_config(request)
    if who.anonymous and not config.anonymous_submit:
        raise Unauthorized("this server takes jobs only with a token")
    # a caller's text is YAML, never a path (load_job would read a str naming a file from the server's disk)
    document = read_document(job.encode("utf-8")) if isinstance(job, str) else job
    normalized = validate_job(copy.deepcopy(document))
    errors = auth.permission_errors(who, normalized, config.settings.max_reservation,
                                    clients.restricted_queues(redis_of(request)))
    if errors:
        raise PermissionDenied(errors)
    key = f"{who.name}\0{idempotency_key}" if idempotency_key else None
    return api.submit_validated(normalized, settings=config.settings, submitted_by=who.name,
                                idempotency_key=key, idempotency_ttl=config.idempotency_ttl)

