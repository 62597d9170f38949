"""Clients of ``convoy server`` in Redis: ids, hashed secrets, permissions, and their bearer tokens.

A client's secret is never stored: only its scrypt hash (random salt per client, parameters kept with the
hash so they can grow later), checked in constant time.  Tokens are random strings handed out once; Redis
holds only their SHA-256, each under a key that expires with the token, so whoever reads Redis learns no
usable secret or token.  ``convoy clients ...`` (lab side, Redis credentials) manages the records;
``convoy server`` reads them.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from convoy.coordinator.state import keys
from convoy.errors import ConvoyError

#: who submitted a job without a token
ANONYMOUS = "anonymous"
#: scrypt cost: n=2**14, r=8, p=1 (16 MiB, tens of ms): an offline guess costs as much per try
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: client ids: letters, digits and ``.-_@`` (they appear in key names and job records)
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_@")


@dataclass
class Client:
    """One client: its id, admin flag and permissions (queue or ``*`` -> limit)."""

    client_id: str
    admin: bool = False
    max_priority: dict[str, int] = field(default_factory=dict)
    max_reservation_time: dict[str, float] = field(default_factory=dict)
    allowed_queues: list[str] = field(default_factory=list)

    def permissions(self) -> dict[str, Any]:
        return {"max_priority": self.max_priority, "max_reservation_time": self.max_reservation_time,
                "allowed_queues": self.allowed_queues}

    def public(self) -> dict[str, Any]:
        """What ``convoy clients list`` shows (never the hash)."""
        return {"client_id": self.client_id, "admin": self.admin, **self.permissions()}


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (hex) of ``secret`` with a fresh 16-byte salt."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches ``stored`` (from :func:`hash_secret`), compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(digest)))
    except ValueError:
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def check_client_id(client_id: str) -> str:
    if not client_id or len(client_id) > 100 or set(client_id) - _ID_CHARS or client_id == ANONYMOUS:
        raise ConvoyError(f"bad client id {client_id!r}: 1-100 of letters, digits and .-_@ (not {ANONYMOUS!r})")
    return client_id


def _text(value: Any) -> str | None:
    """A reply as text (clients made with or without ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else value


def _record(c: Client) -> dict[Any, Any]:
    return {"client_id": c.client_id, "admin": "1" if c.admin else "0", "permissions": json.dumps(c.permissions())}


def _client(data: dict[str, str]) -> Client:
    perms = json.loads(data.get("permissions") or "{}")
    return Client(data["client_id"], admin=data.get("admin") == "1",
                  max_priority={q: int(v) for q, v in (perms.get("max_priority") or {}).items()},
                  max_reservation_time={q: float(v) for q, v in (perms.get("max_reservation_time") or {}).items()},
                  allowed_queues=list(perms.get("allowed_queues") or []))


def add_client(r: redis.Redis, c: Client) -> str:
    """Create client ``c`` with a new secret; return the secret (shown once, stored hashed only)."""
    check_client_id(c.client_id)
    secret = new_secret()
    record: dict[Any, Any] = {**_record(c), "secret_hash": hash_secret(secret), "created_at": str(time.time())}
    if not r.hsetnx(keys.client(c.client_id), "client_id", c.client_id):
        raise ConvoyError(f"client {c.client_id} exists already (convoy clients set/remove)")
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.client(c.client_id), mapping=record)
    pipe.sadd(keys.CLIENTS, c.client_id)
    pipe.execute()
    return secret


def get_client_record(r: redis.Redis, client_id: str) -> Client | None:
    data = {_text(k) or "": _text(v) or "" for k, v in r.hgetall(keys.client(client_id)).items()}
    return _client(data) if data.get("client_id") else None


def save_client(r: redis.Redis, c: Client) -> None:
    """Write an existing client's admin flag and permissions (its secret stays)."""
    if not r.exists(keys.client(c.client_id)):
        raise ConvoyError(f"no such client: {c.client_id}")
    r.hset(keys.client(c.client_id), mapping=_record(c))


def list_clients(r: redis.Redis) -> list[Client]:
    found = (get_client_record(r, _text(cid) or "") for cid in sorted(r.smembers(keys.CLIENTS)))
    return [c for c in found if c is not None]


def remove_client(r: redis.Redis, client_id: str) -> None:
    """Delete a client; its tokens stop working at once (each use checks the client still exists)."""
    if not r.delete(keys.client(client_id)):
        raise ConvoyError(f"no such client: {client_id}")
    r.srem(keys.CLIENTS, client_id)


def authenticate(r: redis.Redis, client_id: str, secret: str) -> Client | None:
    """The client if ``secret`` is its secret, else None (an unknown id costs a hash too)."""
    stored = _text(r.hget(keys.client(client_id), "secret_hash")) if client_id else None
    ok = verify_secret(secret, stored or hash_secret("", salt=b"\0" * 16))
    return get_client_record(r, client_id) if ok and stored else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_tokens(r: redis.Redis, client_id: str, access_ttl: int, refresh_ttl: int) -> tuple[str, str]:
    """A new (access, refresh) token pair for ``client_id``, expiring after the TTLs (seconds)."""
    access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    pipe = r.pipeline(transaction=True)
    pipe.set(keys.access_token(_digest(access)), client_id, ex=access_ttl)
    pipe.set(keys.refresh_token(_digest(refresh)), client_id, ex=refresh_ttl)
    pipe.execute()
    return access, refresh


def refresh_access(r: redis.Redis, refresh: str, access_ttl: int) -> str | None:
    """A new access token for a valid refresh token, else None."""
    client_id = _text(r.get(keys.refresh_token(_digest(refresh)))) if refresh else None
    if not client_id or get_client_record(r, client_id) is None:
        return None
    access = secrets.token_urlsafe(32)
    r.set(keys.access_token(_digest(access)), client_id, ex=access_ttl)
    return access


def client_for_token(r: redis.Redis, access: str) -> Client | None:
    """The client an unexpired access token stands for (None: unknown, expired, or its client removed)."""
    client_id = _text(r.get(keys.access_token(_digest(access)))) if access else None
    return get_client_record(r, client_id) if client_id else None


# --- restricted queues ----------------------------------------------------------
def restricted_queues(r: redis.Redis) -> set[str]:
    """The restricted queues: a client may use one only if its ``allowed_queues`` names it."""
    return {_text(q) or "" for q in r.smembers(keys.RESTRICTED_QUEUES)}


def restrict_queues(r: redis.Redis, queues: list[str], restricted: bool = True) -> None:
    """Make ``queues`` restricted (or, ``restricted=False``, open to every client again)."""
    if queues:
        (r.sadd if restricted else r.srem)(keys.RESTRICTED_QUEUES, *queues)


# --- who submitted which job ----------------------------------------------------
def submission_key(idempotency_key: str) -> str:
    """The key holding the job an idempotent submission created (watch it, then set it with the job)."""
    return keys.submission(hashlib.sha256(idempotency_key.encode()).hexdigest())


def list_job(target: redis.Redis | redis.client.Pipeline, who: str, job_id: str, submitted: float) -> None:
    """List a new top-level job among ``who``'s jobs (inside the submission's transaction)."""
    target.zadd(keys.client_jobs(who), {job_id: submitted})


def submitted_by(r: redis.Redis, job_id: str) -> str | None:
    return _text(r.hget(keys.job(job_id), "submitted_by"))


def client_job_ids(r: redis.Redis, who: str, limit: int) -> list[str]:
    """The ``limit`` newest top-level jobs ``who`` submitted, newest first."""
    return [_text(j) or "" for j in r.zrevrange(keys.client_jobs(who), 0, limit - 1)]
