"""convoy's client of ``convoy server``: what ``submit_job()`` & co. and the CLI use when ``CONVOY_SERVER``
is set, so a user needs the server's address and credentials, never the lab's Redis.

Credentials come from the settings: an access token (``CONVOY_TOKEN``), or a client id and secret
(``CONVOY_CLIENT_ID``, ``CONVOY_SECRET_KEY``) exchanged for a token at ``/v1/oauth2/token`` and exchanged
again when it expires; with neither, requests go anonymous.  HTTP errors come back as convoy's own
errors (404 ``JobNotFound``, 422 ``JobValidationError`` with its field paths, 403 ``PermissionDenied``
naming each limit, 401 ``Unauthorized``, 409 ``JobStateError``), so callers handle one set of errors
whichever way they reach the lab.  The standard library's HTTP client is enough for a JSON API and keeps
convoy's install small; a refused connection is retried with convoy's back-off (``retry.py``) for a
short while, as a restarting server is normal.
"""
from __future__ import annotations

import base64
import functools
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from convoy.config.settings import Settings
from convoy.coordinator.follow import LiveStep
from convoy.errors import (
    ConvoyError,
    FieldError,
    JobNotFound,
    JobStateError,
    JobValidationError,
    PermissionDenied,
    ServiceUnavailable,
    Unauthorized,
)
from convoy.retry import retry_call

#: how long one request may take, beyond a long poll's own wait
REQUEST_TIMEOUT = 60.0
#: how long a refused connection (a restarting server) is retried
RECONNECT_PATIENCE = 10.0


class _Refused(Exception):
    """The server could not be reached at all (retried)."""


class ServerClient:
    """JSON calls to one ``convoy server`` with the settings' credentials."""

    def __init__(self, settings: Settings) -> None:
        if not settings.server_url:
            raise ConvoyError("CONVOY_SERVER is not set")
        self.base = settings.server_url.rstrip("/")
        self.settings = settings
        self._token = settings.server_token
        self._lock = threading.Lock()

    # --- credentials --------------------------------------------------------
    def _login(self) -> str | None:
        """A fresh access token from the client id and secret (None: no client credentials)."""
        if not (self.settings.client_id and self.settings.secret_key):
            return None
        basic = base64.b64encode(f"{self.settings.client_id}:{self.settings.secret_key}".encode()).decode()
        tokens = self._send("POST", "/v1/oauth2/token", headers={"Authorization": f"Basic {basic}"})
        return str(tokens["access_token"])

    def _bearer(self) -> str | None:
        with self._lock:
            if self._token is None:
                self._token = self._login()
            return self._token

    # --- requests -----------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None, raw: bool = False, timeout: float = REQUEST_TIMEOUT) -> Any:
        """One request with the caller's token (logging in again once if it expired); the JSON answer
        (``raw``: the bytes, None for 204)."""
        token = self._bearer()
        try:
            return self._send(method, path, body, params=params, token=token, headers=headers, raw=raw,
                              timeout=timeout)
        except Unauthorized:
            if not (self.settings.client_id and self.settings.secret_key) or self.settings.server_token:
                raise
            with self._lock:
                self._token = None  # expired: log in again, once
            return self._send(method, path, body, params=params, token=self._bearer(), headers=headers, raw=raw,
                              timeout=timeout)

    def _send(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
              token: str | None = None, headers: dict[str, str] | None = None, raw: bool = False,
              timeout: float = REQUEST_TIMEOUT) -> Any:
        url = self.base + path + (f"?{urllib.parse.urlencode(params, doseq=True)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Content-Type": "application/json", "Accept": "application/json", **(headers or {})})
        if token:
            request.add_header("Authorization", f"Bearer {token}")

        def once() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as reply:
                    return reply.status, reply.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
            except (urllib.error.URLError, ConnectionError) as exc:
                raise _Refused(str(getattr(exc, "reason", exc))) from None

        try:
            status, payload = retry_call(once, errors=(_Refused,), patience=RECONNECT_PATIENCE,
                                         what=f"convoy server {self.base}")
        except _Refused as exc:
            raise ServiceUnavailable(self.base, str(exc)) from None
        if status >= 400:
            raise _error(status, payload, path)
        if raw:
            return payload if status != 204 else None
        return json.loads(payload) if payload else None


def _error(status: int, payload: bytes, path: str) -> ConvoyError:
    """convoy's error for an HTTP error answer."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = {}
    detail = str(body.get("detail") or payload[:200].decode(errors="replace") or f"HTTP {status}")
    fields = [FieldError(e.get("field", ""), e.get("message", "")) for e in body.get("errors") or []]
    job_id = _job_id_in(path)
    if status == 404 and job_id:
        return JobNotFound(job_id)
    if status == 422 and fields:
        return JobValidationError(fields)
    if status == 403 and fields:
        return PermissionDenied(fields)
    if status == 401:
        return Unauthorized(f"convoy server: {detail} (set CONVOY_TOKEN, or CONVOY_CLIENT_ID and CONVOY_SECRET_KEY)")
    if status == 409:
        return JobStateError(job_id or "", "", detail)
    if status in (502, 503, 504):
        return ServiceUnavailable(path, f"convoy server answered {status}: {detail}")
    if status >= 500:
        return ConvoyError(f"convoy server failed on {path} (HTTP {status}: {detail}); its log says why")
    return ConvoyError(f"convoy server: {detail}")


def _job_id_in(path: str) -> str | None:
    parts = path.strip("/").split("/")
    return parts[3] if len(parts) > 3 and parts[:3] == ["api", "v1", "jobs"] else None


@functools.lru_cache(maxsize=16)
def client_for(settings: Settings) -> ServerClient:
    """One client per settings for the process: its token is fetched once (a login costs a scrypt hash on
    the server, tens of ms) and its keep-alive state reused by every call of the API."""
    return ServerClient(settings)


class ServerSource:
    """A :class:`~convoy.coordinator.follow.LiveSource` reading a job's live steps from ``convoy server``
    (each step one long-poll request)."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    def labels(self, job_id: str) -> dict[str, str]:
        return dict(self.client.call("GET", f"/api/v1/jobs/{job_id}/labels"))

    def step(self, job_id: str, positions: dict[str, str], calls_seen: int, block_ms: int | None) -> LiveStep:
        params = {"after": [f"{j}:{e}" for j, e in positions.items()], "calls": calls_seen,
                  "wait_ms": block_ms or 0}
        return LiveStep.from_json(self.client.call("GET", f"/api/v1/jobs/{job_id}/live", params=params))
