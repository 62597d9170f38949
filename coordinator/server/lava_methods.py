"""The LAVA XML-RPC methods ``lavacli`` calls, each a thin function over ``access`` and the store.

Each method takes the :class:`Call` (request and caller) and the XML-RPC params, and answers plain values
that ``xmlrpc.client`` marshals.  Permissions are ``access``'s: a job the caller may not see is "not
found", exactly like a job that does not exist.  The shapes are LAVA's (``lava_server/lavaserver/api``):
see each method and ``lava_map``.
"""
from __future__ import annotations

import hashlib
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from fastapi import Request

from convoy.config.lifecycle import FINAL_STATES
from convoy.config.yamlsafe import read_document
from convoy.coordinator import api
from convoy.coordinator.results import job_results, outcome
from convoy.coordinator.server import access, auth, lava_map
from convoy.coordinator.server.lava_xml import FAULT_BAD_REQUEST, FAULT_NOT_FOUND
from convoy.coordinator.state import clients, lavaids
from convoy.coordinator.state.devices import device_summaries
from convoy.errors import ConvoyError, JobNotFound, JobStateError

#: the LAVA API level answered by ``system.version`` (lavacli picks its call forms by it)
LAVA_API_VERSION = "2025.10"
#: an identical definition from the same caller within this many seconds is a resubmission (a retry
#: after a lost answer): it answers the first job.  LAVA's protocol carries no request id, so a twin
#: submitted on purpose within the window is the same job too; after it, a new job is made.
RESUBMIT_WINDOW = 60.0


@dataclass(frozen=True)
class Call:
    """One XML-RPC call: its HTTP request and its caller."""

    request: Request
    who: auth.Identity


def _fault(code: int, message: str) -> xmlrpc.client.Fault:
    return xmlrpc.client.Fault(code, message)


def _not_found(ref: Any) -> xmlrpc.client.Fault:
    return _fault(FAULT_NOT_FOUND, f"Job '{ref}' was not found.")


# --- ids ----------------------------------------------------------------------------------
def resolve(call: Call, ref: Any) -> str:
    """The convoy job id of LAVA job id ``ref`` (``12``, ``"12.1"``) the caller may see; fault 404 else."""
    try:
        number, sub = lava_map.parse_job_ref(ref)
    except ValueError:
        raise _not_found(ref) from None
    redis = access.redis_of(call.request)
    job_id = lavaids.job_of(redis, number)
    if job_id is None:
        raise _not_found(ref)
    try:
        if sub is not None:
            store = access.store_of(call.request)
            group = store.get(job_id).get("parent_job_id") or job_id
            members = store.children(group)
            if sub >= len(members):
                raise _not_found(ref)
            job_id = members[sub]
        access.check_visible(call.request, call.who, job_id)
    except JobNotFound:
        raise _not_found(ref) from None
    return job_id


def numbers(call: Call, job_ids: list[str]) -> dict[str, int]:
    """The jobs' LAVA numbers, numbering on the way those that have none -- except jobs submitted
    anonymously elsewhere: an anonymous caller reads an anonymous job by its number, and numbers are
    guessable where UUIDs are not, so such a job is numbered only if it came in through LAVA."""
    redis = access.redis_of(call.request)
    known = lavaids.numbers_of(redis, job_ids)
    fresh = [j for j in job_ids if j not in known and clients.submitted_by(redis, j) != clients.ANONYMOUS]
    if fresh:
        known.update(zip(fresh, lavaids.number_jobs(redis, fresh), strict=True))
    return known


def display_id(call: Call, job_id: str, record: dict[str, Any]) -> Any:
    """LAVA's id of a job: its number, or ``N.k`` for a MultiNode sub-job (``N``: the group's first)."""
    parent = record.get("parent_job_id")
    if parent:
        members = access.store_of(call.request).children(parent)
        first = numbers(call, members[:1]).get(members[0]) if members else None
        if first is not None and job_id in members:
            return f"{first}.{members.index(job_id)}"
    return numbers(call, [job_id]).get(job_id)


# --- system ---------------------------------------------------------------------------------
def system_version(call: Call) -> str:
    """``system.version``: LAVA's API level (lavacli reads ``YYYY.MM``), then convoy's own version."""
    return f"{LAVA_API_VERSION}+convoy-{call.request.app.version}"


def system_whoami(call: Call) -> str | None:
    """``system.whoami``: the caller's user name, None when anonymous (as LAVA)."""
    return None if call.who.anonymous else call.who.name


# --- jobs -------------------------------------------------------------------------------------
def jobs_submit(call: Call, definition: Any) -> Any:
    """``scheduler.jobs.submit``: the job's id; for a MultiNode job its sub-job ids ``N.k`` (LAVA's order).

    Idempotent: the same caller sending the same text again within :data:`RESUBMIT_WINDOW` gets the
    same answer and nothing new is queued (the key, a digest of caller and text, goes to ``submit_as``)."""
    if not isinstance(definition, str):
        raise _fault(FAULT_BAD_REQUEST, "Problem with submitted job data: the definition must be YAML text")
    # bytes, never a str: a str naming a file would be read from the server's disk
    document = read_document(definition.encode("utf-8"))
    if not isinstance(document, dict):
        raise _fault(FAULT_BAD_REQUEST, "Problem with submitted job data: the definition must be a mapping")
    store = access.store_of(call.request)
    job_id = submit_once(definition, lambda key: access.submit_as(call.request, call.who, document,
                                                                  idempotency_key=key), store.submitted)
    redis = access.redis_of(call.request)
    members = store.children(job_id)
    if members:
        return lava_map.sub_ids(lavaids.number_jobs(redis, members)[0], len(members))
    return lavaids.number_jobs(redis, [job_id])[0]


def submit_once(text: str, submit: Callable[[str], str], submitted: Callable[[str], float],
                now: Callable[[], float] = time.time) -> str:
    """Submit ``text`` with an idempotency key made from it (``submit(key)``, the caller is added by
    ``access.submit_as``); a job it answers that is older than :data:`RESUBMIT_WINDOW` is an earlier twin,
    not this submission: then a key chained to that job makes a new one, itself idempotent."""
    base = "lava-submit:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    key = base
    for _ in range(64):
        job_id = submit(key)
        if now() - submitted(job_id) < RESUBMIT_WINDOW:
            return job_id
        key = f"{base}:after:{job_id}"
    raise ConvoyError("too many identical submissions: change the definition (its job_name, say)")


def _name(call: Call, record: dict[str, Any]) -> str:
    document = record.get("document") or {}
    name = document.get("name") or document.get("job_name")
    if not name and record.get("parent_job_id"):
        parent = access.store_of(call.request).get(record["parent_job_id"]).get("document") or {}
        name = parent.get("name") or parent.get("job_name")
    return str(name or "")


def _when(value: Any) -> xmlrpc.client.DateTime | None:
    moment = lava_map.lava_datetime(value)
    return xmlrpc.client.DateTime(moment.replace(tzinfo=None)) if moment else None


@dataclass(frozen=True)
class Facts:
    """What LAVA's state and health of a job are made of."""

    record: dict[str, Any]
    phases: dict[str, dict[str, Any]]
    cancelled: bool  # a user cancelled the job, or its MultiNode group

    @property
    def state(self) -> str:
        return lava_map.lava_state(self.record["state"], cancel_requested=self.cancelled,
                                   device_assigned=bool(self.record.get("device")))

    @property
    def health(self) -> str:
        return lava_map.lava_health(self.record["state"], outcome(self.record, self.phases),
                                    cancel_requested=self.cancelled)


def facts(call: Call, job_id: str) -> Facts:
    store = access.store_of(call.request)
    record = store.get(job_id)
    cancelled = bool(record.get("cancel_requested"))
    if not cancelled and record.get("parent_job_id"):
        cancelled = bool(store.fields([record["parent_job_id"]], "cancel_requested")[0]["cancel_requested"])
    return Facts(record, store.phases(job_id), cancelled)


def jobs_show(call: Call, ref: Any) -> dict[str, Any]:
    """``scheduler.jobs.show``: LAVA's job details (state, health, times as dateTime, device, ...)."""
    return details(call, resolve(call, ref))


def details(call: Call, job_id: str) -> dict[str, Any]:
    """LAVA's details of a job the caller may see (``scheduler.jobs.show``; ``.list`` takes some)."""
    known = facts(call, job_id)
    record, phases = known.record, known.phases
    state = record["state"]
    document = record.get("document") or {}
    started = sorted(p["started"] for p in phases.values() if p.get("started"))
    tags = document.get("tags") or []
    message = record.get("message") or None
    submitter = record.get("submitted_by") or ""
    return {
        "id": display_id(call, job_id, record),
        "description": _name(call, record),
        "device": record.get("device") or None,
        "device_type": document.get("device_type") or record.get("job_queue"),
        "health_check": False,
        "pipeline": True,
        "health": known.health,
        "state": known.state,
        "submitter": submitter,
        "submit_time": _when(record.get("created_at")),
        "start_time": _when(started[0]) if started else None,
        "end_time": _when(record.get("updated_at")) if state in FINAL_STATES else None,
        "tags": [str(t) for t in tags] if isinstance(tags, list) else [],
        "visibility": "Publicly visible" if submitter == clients.ANONYMOUS else "Personal only",
        "failure_comment": message,
        "error_msg": message,
        "error_type": None,
        "convoy_job_id": job_id,
    }


def _cases(call: Call, job_id: str) -> list[dict[str, Any]]:
    return lava_map.flat_cases(job_results(access.store_of(call.request), job_id).get("test_results") or [])


def jobs_logs(call: Call, ref: Any, start: int = 0, end: int | None = None) -> list[Any]:
    """``scheduler.jobs.logs``: ``[finished, log]``, the log's lines ``start`` up to ``end`` (LAVA's format,
    as Binary UTF-8 like LAVA), ``finished`` once the job is final."""
    job_id = resolve(call, ref)
    store = access.store_of(call.request)
    known = facts(call, job_id)  # the state before the events: a final job's events are all there
    finished = known.record["state"] in FINAL_STATES
    closing: list[dict[str, Any]] = []
    if finished:
        closing = lava_map.closing_lines(_cases(call, job_id), known.health, known.record.get("message") or "")
    events = [(event_id, fields) for _, event_id, fields in store.read_events({job_id: "0-0"})]
    lines = lava_map.log_lines(events, closing)
    text = lava_map.log_text(lines, _int(start, 0), None if end is None else _int(end, 0))
    return [finished, xmlrpc.client.Binary(text.encode("utf-8"))]


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _fault(FAULT_BAD_REQUEST, f"not a line number: {str(value)[:40]!r}") from None


def jobs_cancel(call: Call, ref: Any) -> bool:
    """``scheduler.jobs.cancel``: cancel the job; a MultiNode sub-job cancels its whole group (as LAVA).
    A finished job stays as it is (True, as LAVA)."""
    job_id = resolve(call, ref)
    target = access.store_of(call.request).get(job_id).get("parent_job_id") or job_id
    access.check_changeable(call.request, call.who, target)
    try:
        api.cancel_job(target, settings=access.server_config(call.request).settings)
    except JobStateError:
        pass
    return True


def jobs_definition(call: Call, ref: Any) -> str:
    """``scheduler.jobs.definition``: the job as convoy runs it (normalised; secrets masked), as YAML."""
    record = access.store_of(call.request).get(resolve(call, ref))
    return yaml.safe_dump(record.get("document") or {}, default_flow_style=False, sort_keys=False)


# --- results -------------------------------------------------------------------------------------
def _rows(call: Call, ref: Any) -> list[dict[str, Any]]:
    job_id = resolve(call, ref)
    record = access.store_of(call.request).get(job_id)
    return lava_map.result_rows(str(display_id(call, job_id, record)), _cases(call, job_id))


def results_job(call: Call, ref: Any) -> str:
    """``results.get_testjob_results_yaml``: every test case of the job (LAVA's export), as YAML."""
    return lava_map.results_yaml(_rows(call, ref))


def results_suite(call: Call, ref: Any, suite: str) -> str:
    """``results.get_testsuite_results_yaml``: the cases of one suite (``0_smoke-tests``, ``lava``)."""
    rows = [r for r in _rows(call, ref) if r["suite"] == str(suite)]
    if not rows:
        raise _fault(FAULT_NOT_FOUND, f"Test suite '{suite}' was not found in job '{ref}'.")
    return lava_map.results_yaml(rows)


def results_case(call: Call, ref: Any, suite: str, case: str) -> str:
    """``results.get_testcase_results_yaml``: the cases of that name in that suite (a list, as LAVA)."""
    rows = [r for r in _rows(call, ref) if r["suite"] == str(suite) and r["name"] == str(case)]
    if not rows:
        raise _fault(FAULT_NOT_FOUND, f"Test case '{case}' of suite '{suite}' was not found in job '{ref}'.")
    return lava_map.results_yaml(rows)


# --- the lab ---------------------------------------------------------------------------------------
def devices_list(call: Call, show_all: Any = False, offline_info: Any = False) -> list[dict[str, Any]]:
    """``scheduler.devices.list``: hostname, type, health, state, current_job, pipeline per device."""
    summaries = device_summaries(access.redis_of(call.request))
    busy = numbers(call, [d.job_id for d in summaries if d.job_id])
    return [lava_map.device_row(d.name, d.device_type or (d.queues[0] if d.queues else ""), str(d.health),
                                str(d.occupancy), busy.get(d.job_id) if d.job_id else None)
            for d in summaries]


def workers_list(call: Call, show_all: Any = False) -> list[str]:
    """``scheduler.workers.list``: the hosts devices are served from (LAVA's workers), by name."""
    return sorted({d.host for d in device_summaries(access.redis_of(call.request)) if d.host})


METHODS: dict[str, Callable[..., Any]] = {
    "system.version": system_version,
    "system.whoami": system_whoami,
    "scheduler.jobs.submit": jobs_submit,
    "scheduler.jobs.show": jobs_show,
    "scheduler.jobs.logs": jobs_logs,
    "scheduler.jobs.cancel": jobs_cancel,
    "scheduler.jobs.definition": jobs_definition,
    "results.get_testjob_results_yaml": results_job,
    "results.get_testsuite_results_yaml": results_suite,
    "results.get_testcase_results_yaml": results_case,
    "scheduler.devices.list": devices_list,
    "scheduler.workers.list": workers_list,
}
