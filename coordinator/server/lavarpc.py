"""LAVA's XML-RPC API at ``/RPC2``: the part ``lavacli`` uses, so LAVA users keep their tool.

Methods (``lava_methods.py``, ``lava_listing.py``; shapes as LAVA's): ``system.version``,
``system.listMethods``, ``system.methodHelp``, ``system.whoami``; ``scheduler.jobs.submit`` (an integer
id; a MultiNode job's sub-job ids ``N.0``, ``N.1``, ...), ``.show``, ``.logs`` (LAVA's log format from a
start line; ``[finished, data]``), ``.cancel``, ``.definition``, ``.list``, ``.validate``;
``results.get_testjob_results_yaml`` and its suite and case variants; ``scheduler.devices.list``,
``scheduler.workers.list``.  That covers ``lavacli jobs submit | run | show | logs [--follow] | wait |
cancel | definition | list | validate``, ``lavacli results``, ``devices list`` and ``workers list``.
LAVA's integer job ids map to convoy's UUIDs in Redis (``state/lavaids.py``); the mapping of states,
healths, logs and results is in ``lava_map.py``; safe XML parsing in ``lava_xml.py``.

**Credentials**: HTTP Basic ``user:token``, as lavacli sends the identity ``uri:
http://user:token@host/RPC2`` (or ``username``/``token`` in ``lavacli.yaml``).  ``user`` is the client
id (``convoy clients add``); ``token`` is either an access token from ``POST /v1/oauth2/token`` (it must
belong to ``user``) or the client's secret itself.  The secret is taken because a LAVA token is
long-lived and lavacli users write it once into their identity file: an access token lasting 30 minutes
would have them edit it every half hour.  The secret is checked like ``/v1/oauth2/token`` does (scrypt);
a good one is remembered for a minute (by its SHA-256, in this process) so a ``logs --follow`` poll does
not pay scrypt each second.  No credentials: anonymous, as the server's configuration says (an anonymous
caller reads jobs submitted anonymously through LAVA by their numbers: LAVA's "public" jobs).  Wrong
credentials are refused on every method, ``system.version`` included, so lavacli stops at once with
``Unable to connect: <Fault 401: ...>``; the token never appears in an answer.

**Faults** (HTTP 200, as XML-RPC and LAVA answer them): 400 an invalid job (``Problem with submitted job
data: ...`` naming each field), 401 no or wrong credentials, 403 a permission limit (each named), 404 an
unknown job, or one the caller may not see (``Job '12' was not found.``), 503 Redis unreachable;
-32700 an unreadable request (a DTD or an entity, a body over ``lava_xml.MAX_REQUEST``), -32601 an
unknown method, -32602 wrong parameters, -32603 an internal error.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import threading
import time
import xmlrpc.client
from typing import Any

import redis
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from convoy.coordinator.server import access, auth, lava_listing
from convoy.coordinator.server.lava_methods import METHODS, Call
from convoy.coordinator.server.lava_xml import (
    FAULT_BAD_REQUEST,
    FAULT_FORBIDDEN,
    FAULT_INTERNAL,
    FAULT_NO_METHOD,
    FAULT_NOT_FOUND,
    FAULT_PARAMS,
    FAULT_PARSE,
    FAULT_UNAUTHORIZED,
    FAULT_UNAVAILABLE,
    MAX_REQUEST,
    BadRequest,
    answer,
    fault,
    parse_call,
)
from convoy.coordinator.state import clients
from convoy.errors import ConvoyError, JobNotFound, JobValidationError, ServiceUnavailable

router = APIRouter()
log = logging.getLogger(__name__)
#: how long a checked secret is remembered, seconds, and how many at most
SECRET_MEMORY = 60.0
SECRET_MEMORY_SIZE = 1000
_remembered: dict[str, float] = {}
_remembered_lock = threading.Lock()
_BAD_CREDENTIALS = ("Authentication failed: invalid user or token (the token is the client's secret, or an "
                    "access token of that client from POST /v1/oauth2/token)")


def _system_list_methods(call: Call) -> list[str]:
    """``system.listMethods``: the methods this server answers."""
    return sorted(_methods())


def _system_method_help(call: Call, name: str) -> str:
    """``system.methodHelp``: what a method does."""
    method = _methods().get(str(name))
    return inspect.getdoc(method) or "" if method else ""


def _methods() -> dict[str, Any]:
    return {**METHODS, **lava_listing.METHODS, "system.listMethods": _system_list_methods,
            "system.methodHelp": _system_method_help}


# --- credentials ----------------------------------------------------------------------------------
def _remembered_secret(digest: str) -> bool:
    with _remembered_lock:
        until = _remembered.get(digest)
        return until is not None and until > time.monotonic()


def _remember_secret(digest: str) -> None:
    with _remembered_lock:
        if len(_remembered) >= SECRET_MEMORY_SIZE:
            now = time.monotonic()
            for key in [k for k, until in _remembered.items() if until <= now] or list(_remembered):
                _remembered.pop(key, None)
        _remembered[digest] = time.monotonic() + SECRET_MEMORY


def caller(request: Request) -> auth.Identity:
    """The caller of an XML-RPC request (see the module's doc); ``Unauthorized`` for wrong credentials."""
    header = request.headers.get("authorization")
    if not header:
        return auth.Identity()
    basic = auth.basic_credentials(header)
    user, token = basic if basic else (None, auth.bearer_token(header))
    if not token:
        raise access.Unauthorized(_BAD_CREDENTIALS)
    try:
        who = access.caller_for_token(request, token)
    except access.Unauthorized:
        who = None
    if who is not None:
        if user and who.name != user:
            raise access.Unauthorized(_BAD_CREDENTIALS)
        return who
    if not user:
        raise access.Unauthorized(_BAD_CREDENTIALS)
    store = access.redis_of(request)
    digest = hashlib.sha256(f"{user}\0{token}".encode()).hexdigest()
    if _remembered_secret(digest):
        client = clients.get_client_record(store, user)  # removed meanwhile: refused at once
    else:
        client = clients.authenticate(store, user, token)
        if client is not None:
            _remember_secret(digest)
    if client is None:
        raise access.Unauthorized(_BAD_CREDENTIALS)
    return auth.Identity(client)


# --- dispatch ---------------------------------------------------------------------------------------
def _fault_of(exc: Exception) -> tuple[int, str]:
    """The fault code and message of an error raised by a method."""
    if isinstance(exc, xmlrpc.client.Fault):
        return exc.faultCode, exc.faultString
    if isinstance(exc, access.Unauthorized):
        return FAULT_UNAUTHORIZED, str(exc)
    if isinstance(exc, access.PermissionDenied):
        return FAULT_FORBIDDEN, str(exc)
    if isinstance(exc, JobNotFound):
        return FAULT_NOT_FOUND, "Job was not found."
    if isinstance(exc, JobValidationError):
        return FAULT_BAD_REQUEST, f"Problem with submitted job data: {exc}"
    if isinstance(exc, ServiceUnavailable):
        return FAULT_UNAVAILABLE, str(exc)
    if isinstance(exc, redis.RedisError):
        return FAULT_UNAVAILABLE, "the job store (Redis) did not answer: try again"
    if isinstance(exc, ConvoyError):
        return FAULT_BAD_REQUEST, str(exc)
    return FAULT_INTERNAL, "internal server error (see the server's log)"


def handle(request: Request, body: bytes) -> bytes:
    """Answer one XML-RPC request body: the method's answer, or a fault."""
    try:
        name, params = parse_call(body)
    except BadRequest as exc:
        return fault(FAULT_PARSE, f"Unreadable request: {exc}")
    method = _methods().get(name)
    if method is None:
        return fault(FAULT_NO_METHOD, f"Method '{name[:100]}' is not supported (system.listMethods lists them)")
    try:
        who = caller(request)
        try:
            inspect.signature(method).bind(None, *params)
        except TypeError:
            return fault(FAULT_PARAMS, f"Wrong number of parameters for {name}")
        return answer(method(Call(request, who), *params))
    except Exception as exc:  # every error becomes a fault: lavacli prints its message
        code, message = _fault_of(exc)
        if code == FAULT_INTERNAL:
            log.exception("LAVA XML-RPC %s failed", name)
        return fault(code, message)


async def _body(request: Request) -> bytes | None:
    """The request's body, or None past :data:`MAX_REQUEST` (read no further)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_REQUEST:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_REQUEST:
            return None
    return bytes(data)


@router.post("/RPC2", include_in_schema=False)
@router.post("/RPC2/", include_in_schema=False)
async def rpc2(request: Request) -> Response:
    """LAVA's XML-RPC endpoint (lavacli's ``--uri http://user:token@host/RPC2``)."""
    body = await _body(request)
    if body is None:
        payload = fault(FAULT_PARSE, f"Unreadable request: larger than {MAX_REQUEST} bytes")
    else:
        payload = await run_in_threadpool(handle, request, body)
    return Response(payload, media_type="text/xml")


__all__ = ["caller", "handle", "router"]
