"""A job's artifacts in Redis: the tar.gz of its ``artifacts/`` directory, and a note in its record.

One binary key per job (``keys.job_artifacts``) beside its record's other
keys; the record's ``artifacts`` field says what happened to them in words
(stored, none, too large, failed), so nothing is lost silently.  Packing is
the host's business (``tasks/run/artifacts.py``); this module only stores
and reads bytes.
"""
from __future__ import annotations

import functools

import redis

from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import client_url, make_client

#: the record's field that says what became of the job's artifacts
NOTE_FIELD = "artifacts"


def save_artifacts(client: redis.Redis, job_id: str, data: bytes | None, note: str) -> bool:
    """Store ``data`` (None: drop any earlier archive) and ``note``; False if Redis no longer knows the job."""
    if not client.hexists(keys.job(job_id), "state"):
        return False  # never make a record for a job Redis forgot
    with client.pipeline() as pipe:
        if data is None:
            pipe.delete(keys.job_artifacts(job_id))
        else:
            pipe.set(keys.job_artifacts(job_id), data)
        pipe.hset(keys.job(job_id), NOTE_FIELD, note)
        pipe.execute()
    return True


def load_artifacts(client: redis.Redis, job_id: str) -> bytes | None:
    """The job's tar.gz, or None when it left none (or they were not stored)."""
    data = _binary(client_url(client)).get(keys.job_artifacts(job_id))
    return data if isinstance(data, bytes) else None


def artifacts_note(client: redis.Redis, job_id: str) -> str | None:
    """What became of the job's artifacts, in words (None: the job's commands have not ended yet)."""
    note = client.hget(keys.job(job_id), NOTE_FIELD)
    return str(note) if note is not None else None


@functools.cache
def _binary(url: str) -> redis.Redis:
    """A client that hands back bytes (the store's decodes text)."""
    return make_client(url, decode_responses=False)
