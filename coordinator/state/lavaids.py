"""LAVA job numbers for convoy jobs: LAVA names a job by an integer, convoy by a UUID.

``convoy server``'s LAVA front (``coordinator/server/lavarpc.py``) hands out numbers from one counter
(``INCRBY``) and keeps both directions in two hashes (number -> job id, job id -> number).  A job gets
its number once and keeps it; numbering is done in a Lua script, so two callers asking for the same job
at once get the same number, and the children of a MultiNode job, numbered together, get consecutive
ones (LAVA's sub-jobs ``N.0``, ``N.1``, ... are numbered ``N``, ``N+1``, ...).  Like job records, the
mapping is never removed.
"""
from __future__ import annotations

from collections.abc import Iterable

import redis

from convoy.coordinator.state import keys

__all__ = ["job_of", "number_jobs", "numbers_of"]

# KEYS: counter, number -> job, job -> number; ARGV: job ids -> their numbers (new ones consecutive)
_NUMBER = """
local out = {}
local missing = 0
for i, job in ipairs(ARGV) do
  out[i] = redis.call('HGET', KEYS[3], job)
  if not out[i] then missing = missing + 1 end
end
if missing > 0 then
  local n = redis.call('INCRBY', KEYS[1], missing) - missing + 1
  for i, job in ipairs(ARGV) do
    if not out[i] then
      out[i] = tostring(n)
      redis.call('HSET', KEYS[3], job, n)
      redis.call('HSET', KEYS[2], n, job)
      n = n + 1
    end
  end
end
return out
"""


def number_jobs(client: redis.Redis, job_ids: Iterable[str]) -> list[int]:
    """Each job's LAVA number, handing out new (consecutive) numbers to jobs that have none yet."""
    ids = list(job_ids)
    if not ids:
        return []
    script = client.register_script(_NUMBER)
    reply = script(keys=[keys.LAVA_ID_COUNTER, keys.LAVA_ID_JOBS, keys.LAVA_ID_NUMBERS], args=ids)
    return [int(n) for n in reply]


def numbers_of(client: redis.Redis, job_ids: Iterable[str]) -> dict[str, int]:
    """The LAVA numbers the jobs already have (jobs without one are left out); hands out none."""
    ids = list(job_ids)
    if not ids:
        return {}
    found = client.hmget(keys.LAVA_ID_NUMBERS, ids)
    return {job_id: int(n) for job_id, n in zip(ids, found, strict=True) if n is not None}


def job_of(client: redis.Redis, number: int) -> str | None:
    """The convoy job id LAVA number ``number`` stands for, or None."""
    found = client.hget(keys.LAVA_ID_JOBS, str(int(number)))
    if isinstance(found, bytes):
        return found.decode()
    return found
