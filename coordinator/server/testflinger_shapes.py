"""Pure mappings from convoy's records to the JSON shapes of Testflinger's REST v1 (no Redis, no HTTP).

``testflinger.py`` serves these; keeping them here lets the unit tests pin every shape testflinger-cli
reads: the flat results (``<phase>_status``, ``<phase>_output``, ``job_state``), output by fragments
(``{"output": {phase: {"last_fragment_number", "log_data"}}}``, one entry per Testflinger phase), agents
of a queue, and the error bodies (``{"message", "detail"}``; a 422 names each field under
``detail.json`` as testflinger-cli prints them).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from convoy.coordinator.server.streams import event_time
from convoy.errors import FieldError

#: Testflinger's test phases in its own order: every log answer has one entry for each
TF_PHASES = ("setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup")
#: the log types of ``/v1/result/<id>/log/<type>`` (convoy keeps no serial console log: ``serial`` is empty)
LOG_TYPES = ("output", "serial")
#: the fields of Testflinger's job schema: what ``GET /v1/job/<id>`` shows of a job's document
JOB_FIELDS = ("job_id", "parent_job_id", "name", "tags", "job_queue", "global_timeout", "output_timeout",
              "allocation_timeout", "provision_data", "firmware_update_data", "test_data", "allocate_data",
              "reserve_data", "job_status_webhook", "job_priority", "exclude_agents", "debug")
ACTIONS = ("cancel",)
NOT_WAITING = "Job not found or already started\n"
ALREADY_ENDED = "The job is already completed or cancelled"


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID: Testflinger answers 400 for any other job id."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def error_body(message: str) -> dict[str, Any]:
    """A Testflinger error answer (``abort(status, message=...)``): testflinger-cli shows ``message``."""
    return {"message": message, "detail": {}}


def validation_body(errors: Iterable[FieldError], location: str = "json") -> dict[str, Any]:
    """A 422 as Testflinger's: ``detail.<location>.<field>: [messages]`` (a whole-document problem under
    ``_schema``), plus convoy's ``errors: [{field, message}]``."""
    errors = list(errors)
    fields: dict[str, list[str]] = {}
    for error in errors:
        fields.setdefault(error.path or "_schema", []).append(error.message)
    return {"message": "Validation error", "detail": {location: fields},
            "errors": [{"field": e.path, "message": e.message} for e in errors]}


def action_errors(body: Any) -> list[FieldError]:
    """What is wrong with ``POST /v1/job/<id>/action``'s body (Testflinger takes only ``cancel``)."""
    if not isinstance(body, dict):
        return [FieldError("", "Invalid input type.")]
    errors = [FieldError(key, "Unknown field.") for key in body if key != "action"]
    if "action" not in body:
        errors.insert(0, FieldError("action", "Missing data for required field."))
    elif not isinstance(body["action"], str):
        errors.insert(0, FieldError("action", "Not a valid string."))
    elif body["action"] not in ACTIONS:
        errors.insert(0, FieldError("action", f"Must be one of: {', '.join(ACTIONS)}."))
    return errors


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def job_shape(job_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """The job as Testflinger's ``GET /v1/job/<id>`` shows it: the fields of its job schema, with the id
    (convoy's own additions, such as ``timeouts``, stay in ``/api/v1/jobs/<id>``)."""
    shown = {key: _whole(document[key]) for key in JOB_FIELDS if key in document}
    shown["job_id"] = job_id
    shown.setdefault("exclude_agents", [])
    return shown


def result_shape(results: Mapping[str, Any]) -> dict[str, Any]:
    """convoy's results (``coordinator.results``) as Testflinger's flat result: ``job_state``,
    ``<phase>_status`` (int) and ``<phase>_output`` (str), ``device_info`` (an object); convoy's own
    fields (``outcome``, ``test_results``, ``children``, ...) stay beside them."""
    shaped = dict(results)
    for key, value in results.items():
        if key.endswith("_status") and value is not None:
            shaped[key] = int(value)
        elif key.endswith("_output"):
            shaped[key] = value or ""
    if not isinstance(shaped.get("device_info", {}), dict):
        shaped.pop("device_info")
    return shaped


@dataclass(frozen=True)
class Fragment:
    """One piece of a job's output, numbered across the whole job from 0 in the order it was written."""

    number: int
    phase: str
    text: str
    #: when it was written (epoch seconds)
    at: float


def fragments_of(events: Iterable[tuple[str, Mapping[str, str]]]) -> list[Fragment]:
    """The job's output fragments from its events ``(event id, fields)`` in order: each ``output`` event
    is one fragment, so the numbers never change as the job writes more."""
    out: list[Fragment] = []
    for event_id, fields in events:
        if fields.get("type") == "output":
            out.append(Fragment(len(out), fields.get("phase", ""), fields.get("data", ""), event_time(event_id)))
    return out


def parse_log_query(query: Mapping[str, str]) -> tuple[int, float | None, str | None, dict[str, list[str]]]:
    """``start_fragment``, ``start_timestamp`` (epoch) and ``phase`` of a log request, and the problems
    with them (Testflinger answers 400 with them)."""
    problems: dict[str, list[str]] = {}
    start = 0
    if "start_fragment" in query:
        try:
            start = int(query["start_fragment"])
        except ValueError:
            problems["start_fragment"] = ["Not a valid integer."]
        else:
            if start < 0:
                problems["start_fragment"] = ["Must be greater than or equal to 0."]
    since = None
    if "start_timestamp" in query:
        try:
            moment = datetime.fromisoformat(query["start_timestamp"])
        except ValueError:
            problems["start_timestamp"] = ["Not a valid datetime."]
        else:
            since = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    phase = query.get("phase")
    if phase is not None and phase not in TF_PHASES:
        problems["phase"] = [f"Must be one of: {', '.join(TF_PHASES)}."]
    return start, since, phase, problems


def log_body(fragments: Iterable[Fragment], log_type: str, start: int = 0, since: float | None = None,
             phase: str | None = None) -> dict[str, Any]:
    """Testflinger's log answer: for each phase (or just ``phase``) the fragments numbered ``start`` on
    (written at ``since`` or later), joined, and the number of the last one (-1: none)."""
    chosen = [f for f in fragments if f.number >= start and (since is None or f.at >= since)]
    body = {}
    for name in (phase,) if phase else TF_PHASES:
        mine = [f for f in chosen if f.phase == name]
        body[name] = {"last_fragment_number": mine[-1].number if mine else -1,
                      "log_data": "".join(f.text for f in mine)}
    return {log_type: body}


def jobs_ahead(job_id: str, line: Iterable[tuple[str, Iterable[str]]]) -> int | None:
    """How many jobs wait before ``job_id`` for a queue it wants too (Testflinger's position: 0 is next),
    from every waiting job ``(id, the queues or device types it wants)`` in the scheduling order; None
    when ``job_id`` no longer waits."""
    ahead: list[frozenset[str]] = []
    for other, wants in line:
        wanted = frozenset(wants)
        if other == job_id:
            return sum(1 for earlier in ahead if earlier & wanted)
        ahead.append(wanted)
    return None


def agent_shape(name: str, health: str, queues: Iterable[str], host: str, connector: str,
                job_id: str | None, job_state: str | None, comment: str = "") -> dict[str, Any]:
    """A device as a Testflinger agent (``GET /v1/queues/<q>/agents``): ``state`` is ``waiting`` when
    idle, the job's state while it runs one, else ``offline`` or ``maintenance``."""
    if health in ("offline", "maintenance"):
        state = health
    elif job_id:
        state = job_state or "provision"
    else:
        state = "waiting"
    return {"name": name, "state": state, "queues": list(queues), "location": host,
            "provision_type": connector, "job_id": job_id or "", "comment": comment}
