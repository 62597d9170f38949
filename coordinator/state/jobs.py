"""The job store: job records, states, phases and output in Redis.

Every state change and output chunk is also appended to the job's event
stream, so that watchers (``convoy poll``, ``wait_for_job``, a parent waiting
for its children) block on ``XREAD`` instead of polling.  State transitions
are atomic (a Lua script) so a cancel and a worker starting the job can never
both win.
"""
from __future__ import annotations

import copy
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import redis

from convoy.config.lifecycle import FINAL_STATES, TRANSITIONS, JobState, Phase
from convoy.config.outcome import ChildEnd, Verdict, multi_job_outcome
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import BLOCK_SLICE_MS, block_ms_before, reconnecting
from convoy.coordinator.state.secrets import MASK, mask_chunk, mask_rest
from convoy.errors import JobNotFound

EVENTS_MAXLEN = 20000
#: how long a final job's secrets stay (late output is still masked with them), then Redis drops them
SECRETS_KEPT_SECONDS = 3600
#: record fields stored as JSON (decoded when read)
_JSON_FIELDS = ("document", "device_info", "chord_part", "device_children", "reserved_keys")

# The atomic transition (KEYS, ARGV and reply in its header), installed beside this module.
_TRANSITION = (Path(__file__).parent / "lua" / "transition.lua").read_text(encoding="utf-8")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def split_secrets(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the document to record, its ``test_data.secrets``): the record names each secret, its value ``***``."""
    secrets = (document.get("test_data") or {}).get("secrets") or {}
    if not secrets:
        return document, {}
    public = copy.deepcopy(document)
    public["test_data"]["secrets"] = {name: MASK for name in secrets}
    return public, {name: str(value) for name, value in secrets.items()}


def with_secret_values(document: dict[str, Any], secrets: Mapping[str, str]) -> dict[str, Any]:
    """``document`` with its secrets' values, in ``test_data.secrets`` and ``test_data.env``."""
    if not secrets:
        return document
    running = copy.deepcopy(document)
    test_data = running.setdefault("test_data", {})
    test_data["secrets"] = dict(secrets)
    test_data["env"] = {**(test_data.get("env") or {}), **secrets}
    return running


class JobStore:
    """Job records in Redis; one instance per process is enough (thread-safe client)."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._transition = client.register_script(_TRANSITION)
        #: job id -> its secret values (they never change), for masking its output
        self._secrets: dict[str, tuple[str, ...]] = {}
        #: (job id, phase) -> the end of the output written so far that may begin a secret (not yet stored)
        self._held: dict[tuple[str, str], str] = {}
        self._held_lock = threading.Lock()

    @property
    def client(self) -> redis.Redis:
        """The store's Redis client, for peers in the state and MultiNode layers.

        Pass it to their functions (the device registry, the MultiNode group,
        a ``ControlWatcher``); never use it for commands of your own: key
        names are private to those layers.
        """
        return self._r

    def pipeline(self, transaction: bool = True) -> redis.client.Pipeline:
        """A pipeline for several store writes at once (pass it as ``pipe=``, then ``execute()``)."""
        return self._r.pipeline(transaction=transaction)

    # --- records ------------------------------------------------------------
    def create(self, job_id: str, document: dict[str, Any], *, queue: str,
               parent_job_id: str | None = None, role: str | None = None, submitted_by: str | None = None,
               pipe: redis.client.Pipeline | None = None) -> None:
        """Store a new job record in state ``waiting`` (inside ``pipe`` when given).

        A child (``parent_job_id``) is appended to its parent's children:
        :meth:`children` lists them in the order they were created.
        """
        document, secrets = split_secrets(document)
        record = {
            "job_id": job_id,
            "state": JobState.WAITING,
            "job_queue": queue,
            "document": json.dumps(document),
            "created_at": now_iso(),
            "updated_at": now_iso(),
        }
        if parent_job_id:
            record["parent_job_id"] = parent_job_id
        if role:
            record["role"] = role
        if submitted_by:
            record["submitted_by"] = submitted_by
        target = pipe if pipe is not None else self._r
        if secrets:
            target.hset(keys.job_secrets(job_id), mapping=secrets)
        target.hset(keys.job(job_id), mapping=record)
        target.zadd(keys.JOBS, {job_id: time.time()})
        target.zadd(keys.queue_waiting(queue), {job_id: time.time()})
        target.xadd(keys.job_events(job_id), {"type": "state", "state": JobState.WAITING, "from": ""},
                    maxlen=EVENTS_MAXLEN, approximate=True)
        if parent_job_id:
            target.rpush(keys.job_children(parent_job_id), job_id)

    def newest(self, limit: int) -> list[str]:
        """The ids of the ``limit`` most recently submitted jobs (children too), newest first."""
        return self._r.zrevrange(keys.JOBS, 0, limit - 1)

    def submitted(self, job_id: str) -> float:
        """When the job was submitted (epoch seconds; 0 if unknown)."""
        score = self._r.zscore(keys.JOBS, job_id)
        return float(score) if score is not None else 0.0

    def get(self, job_id: str, *, with_secrets: bool = False) -> dict[str, Any]:
        """The job record with JSON fields decoded; raises JobNotFound.

        The document's ``test_data.secrets`` values read ``***``; ``with_secrets`` (for the task
        that runs the job's commands, never for showing) gives the real ones, also in
        ``test_data.env``, where the commands' environment is made from."""
        raw = self._r.hgetall(keys.job(job_id))
        if not raw:
            raise JobNotFound(job_id)
        record: dict[str, Any] = dict(raw)
        for field in _JSON_FIELDS:
            if field in record:
                record[field] = json.loads(record[field])
        if with_secrets and isinstance(record.get("document"), dict):
            record["document"] = with_secret_values(record["document"], self._r.hgetall(keys.job_secrets(job_id)))
        return record

    def secret_values(self, job_id: str) -> tuple[str, ...]:
        """The job's secret values (cached: they never change); none where this user may not read them."""
        known = self._secrets.get(job_id)
        if known is None:
            try:
                known = tuple(v for v in self._r.hvals(keys.job_secrets(job_id)) if v)
            except redis.exceptions.NoPermissionError:  # a submitter's ACL user: it writes no job output
                known = ()
            if len(self._secrets) > 10000:
                self._secrets.clear()
            self._secrets[job_id] = known
        return known

    def exists(self, job_id: str) -> bool:
        """Whether the store knows the job (a record with a state: a late write to a forgotten job's
        record, after Redis lost its data, makes a hash without one)."""
        return bool(self._r.hexists(keys.job(job_id), "state"))

    def state(self, job_id: str) -> str:
        state = self._r.hget(keys.job(job_id), "state")
        if state is None:
            raise JobNotFound(job_id)
        return state

    def states(self, job_ids: Iterable[str]) -> dict[str, str]:
        ids = list(job_ids)
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        return dict(zip(ids, pipe.execute()))

    def fields(self, job_ids: Iterable[str], *names: str) -> list[dict[str, Any]]:
        """``names`` of each job's record in one round trip (JSON fields decoded)."""
        ids = list(job_ids)
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), names)
        out = []
        for values in pipe.execute():
            row = {}
            for name, value in zip(names, values):
                row[name] = json.loads(value) if value is not None and name in _JSON_FIELDS else value
            out.append(row)
        return out

    def set_fields(self, job_id: str, pipe: redis.client.Pipeline | None = None, **fields: Any) -> None:
        """Set fields of the job's record (inside ``pipe`` when given); dicts and lists as JSON."""
        encoded = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in fields.items()}
        (pipe if pipe is not None else self._r).hset(keys.job(job_id), mapping=encoded)

    def transition(self, job_id: str, to: str, *, allowed_from: Iterable[str] = (),
                   **fields: Any) -> tuple[bool, str]:
        """Move the job to state ``to`` if the lifecycle table allows it from the current state.

        ``allowed_from`` narrows the table's entry further (a caller that
        must only start a waiting job, say).  Returns (changed, previous
        state).  Final states never change.
        """
        allowed = TRANSITIONS[JobState(to)]
        if allowed_from:
            allowed = allowed & frozenset(JobState(s) for s in allowed_from)
        extra: list[str] = []
        for k, v in fields.items():
            extra += [k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)]
        changed, previous = self._transition(
            keys=[keys.job(job_id), keys.job_events(job_id)],
            args=[str(to), ",".join(sorted(allowed)) or "-", now_iso(), *extra],
        )
        if changed:
            record = self._r.hget(keys.job(job_id), "job_queue")
            if record and previous == JobState.WAITING:
                self._r.zrem(keys.queue_waiting(record), job_id)
            if JobState(to) in FINAL_STATES:  # no command of the job runs any more: its secrets go soon
                self._r.expire(keys.job_secrets(job_id), SECRETS_KEPT_SECONDS)
        return bool(changed), previous

    # --- phases and output ---------------------------------------------------
    # (tasks record a phase through ``tasks.run.phase.PhaseRun``; submit_job only starts a parent's provision)
    def start_phase(self, job_id: str, phase: Phase) -> None:
        self._r.hset(keys.job_phases(job_id), phase, json.dumps({"started": now_iso()}))
        self._event(job_id, {"type": "phase", "phase": phase, "event": "start"})

    def end_phase(self, job_id: str, phase: Phase, status: int) -> None:
        self._flush_output(job_id, phase)
        previous = self._r.hget(keys.job_phases(job_id), phase)
        data = json.loads(previous) if previous else {}
        data.update({"status": int(status), "ended": now_iso()})
        self._r.hset(keys.job_phases(job_id), phase, json.dumps(data))
        self._event(job_id, {"type": "phase", "phase": phase, "event": "end", "status": str(status)})

    def phases(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self._r.hgetall(keys.job_phases(job_id)).items()}

    def append_output(self, job_id: str, phase: Phase, text: str) -> None:
        """Append ``text`` to the phase's output and events, its secrets masked (``***``).

        The end of a chunk that may begin a secret is held back until the next chunk or the
        phase's end (:meth:`end_phase`); held text is dropped only once stored."""
        secrets = self.secret_values(job_id) if text else ()
        if not secrets:
            self._store_output(job_id, phase, text)
            return
        with self._held_lock:
            held = self._held.get((job_id, phase), "")
            now, keep = mask_chunk(held, text, secrets)
            self._store_output(job_id, phase, now)  # raises: nothing consumed, the retry sends it all again
            if keep:
                self._held[(job_id, phase)] = keep
            else:
                self._held.pop((job_id, phase), None)

    def _flush_output(self, job_id: str, phase: Phase) -> None:
        with self._held_lock:
            held = self._held.get((job_id, phase))
            if held:
                self._store_output(job_id, phase, mask_rest(held, self.secret_values(job_id)))
                self._held.pop((job_id, phase), None)

    def _store_output(self, job_id: str, phase: Phase, text: str) -> None:
        if not text:
            return
        pipe = self._r.pipeline(transaction=False)
        pipe.append(keys.job_output(job_id, phase), text)
        pipe.xadd(keys.job_events(job_id), {"type": "output", "phase": phase, "data": text},
                  maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.execute()

    def output(self, job_id: str, phase: str) -> str:
        return self._r.get(keys.job_output(job_id, phase)) or ""

    def _event(self, job_id: str, fields: dict[str, str]) -> None:
        self._r.xadd(keys.job_events(job_id), fields, maxlen=EVENTS_MAXLEN, approximate=True)

    # --- outcome of a multi job ---------------------------------------------------
    def child_ends(self, child_ids: list[str]) -> list[ChildEnd]:
        """How each child ended, read from its record and phases (the outcome's input)."""
        rows = self.fields(child_ids, "state", "outcome", "message", "cancel_reason", "role", "job_queue")
        return [ChildEnd(job_id=cid, label=row["role"] or row["job_queue"] or "", state=row["state"] or "",
                         outcome=row["outcome"] or "", message=row["message"] or "",
                         cancel_reason=row["cancel_reason"] or "", phases=self.phases(cid))
                for cid, row in zip(child_ids, rows)]

    def verdict(self, parent_id: str, ends: list[ChildEnd], record: dict[str, Any] | None = None) -> Verdict:
        """The parent's outcome and reasons from what the store holds now."""
        record = record if record is not None else self.get(parent_id)
        return multi_job_outcome(self.phases(parent_id), ends, cancelled=bool(record.get("cancel_requested")),
                                 message=record.get("message") or "")

    # --- children ------------------------------------------------------------
    def children(self, job_id: str) -> list[str]:
        return self._r.lrange(keys.job_children(job_id), 0, -1)

    # --- control signals (to the task running the job) -----------------------
    def signal(self, job_id: str, name: str, pipe: redis.client.Pipeline | None = None, **data: str) -> None:
        """Send ``name`` (cancel, test, release, start) to the job's running task (inside ``pipe`` when given)."""
        target = pipe if pipe is not None else self._r
        target.xadd(keys.job_control(job_id), {"signal": name, **data}, maxlen=1000, approximate=True)

    # --- parents on the move (the scheduler watches their steps) -------------------
    def parent_started(self, parent_id: str, pipe: redis.client.Pipeline | None = None) -> None:
        (pipe if pipe is not None else self._r).sadd(keys.ACTIVE_PARENTS, parent_id)

    def parent_ended(self, parent_id: str) -> None:
        self._r.srem(keys.ACTIVE_PARENTS, parent_id)

    def active_parents(self) -> list[str]:
        """Multi jobs past waiting and not known final (those whose steps may need a repair)."""
        return sorted(self._r.smembers(keys.ACTIVE_PARENTS))

    def fix_time(self, job_id: str, name: str, at: float) -> float:
        """Record ``name`` as ``at`` unless it is recorded already; the recorded value (a deadline kept
        across re-runs of the step that set it)."""
        pipe = self._r.pipeline()
        pipe.hsetnx(keys.job(job_id), name, repr(at))
        pipe.hget(keys.job(job_id), name)
        return float(pipe.execute()[1])

    def mark_done(self, job_id: str, step: str) -> bool:
        """Record that the parent's ``step`` finished; True the first time (a step ends once)."""
        return bool(self._r.hsetnx(keys.job(job_id), f"step_{step}", now_iso()))

    def once(self, job_id: str, what: str, ttl: int = 7 * 24 * 3600) -> bool:
        """True the first time it is called for (job, what); False ever after."""
        return bool(self._r.set(keys.job_once(job_id, what), "1", nx=True, ex=ttl))

    def happened(self, job_id: str, what: str) -> bool:
        """Whether :meth:`once` was already called for (job, what)."""
        return bool(self._r.exists(keys.job_once(job_id, what)))

    def happened_to(self, job_ids: Iterable[str], what: str) -> dict[str, bool]:
        """:meth:`happened` for many jobs in one round trip."""
        ids = list(job_ids)
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.exists(keys.job_once(job_id, what))
        return {job_id: bool(n) for job_id, n in zip(ids, pipe.execute(), strict=True)}

    # --- watching -----------------------------------------------------------------
    def last_event_ids(self, job_ids: Iterable[str]) -> dict[str, str]:
        pipe = self._r.pipeline(transaction=False)
        ids = list(job_ids)
        for job_id in ids:
            pipe.xrevrange(keys.job_events(job_id), count=1)
        out = {}
        for job_id, entries in zip(ids, pipe.execute()):
            out[keys.job_events(job_id)] = entries[0][0] if entries else "0-0"
        return out

    def wait_until(self, job_ids: Iterable[str], done: Callable[[], bool],
                   timeout: float | None, client: redis.Redis | None = None) -> bool:
        """Block until ``done()`` is true, re-checking only when one of the jobs has an event.

        Subscribe-then-check: the stream positions are taken before ``done()``
        runs, so an event between the check and the read is never missed.
        Waits of any length work: each ``XREAD`` blocks for at most one slice
        (below the socket timeout) and ``done()`` is re-checked after it; a
        lost connection (a Redis restart) is retried with back-off until the
        deadline.  Returns False on timeout.
        """
        reader = client or self._r
        ids = list(job_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        streams = reconnecting(lambda: self.last_event_ids(ids), deadline=deadline, what="wait_until")

        def read(block: int) -> list:
            return reader.xread(streams, block=block) or []

        while True:
            if reconnecting(done, deadline=deadline, what="wait_until"):
                return True
            block = block_ms_before(deadline)
            if block is None:
                return False
            for stream, entries in reconnecting(lambda: read(block), deadline=deadline, what="wait_until"):
                streams[stream] = entries[-1][0]

    def read_events(self, positions: Mapping[str, str],
                    block_ms: int | None = None) -> list[tuple[str, str, dict[str, str]]]:
        """The events of several jobs after their positions: ``(job id, event id, fields)``.

        ``positions`` maps each job id to the id of the last event seen
        (``0-0``: from the start).  With ``block_ms``, blocks until one of the
        jobs has an event, at most ``block_ms`` (capped at one slice: call
        again); without, returns at once.  Each job's events come in order.
        """
        if not positions:
            return []
        block = None if block_ms is None else min(block_ms, BLOCK_SLICE_MS)
        by_stream = {keys.job_events(job_id): job_id for job_id in positions}
        reply = self._r.xread({keys.job_events(job_id): after for job_id, after in positions.items()}, block=block)
        return [(by_stream[stream], entry_id, fields)
                for stream, entries in reply or [] for entry_id, fields in entries]
