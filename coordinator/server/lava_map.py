"""convoy's words in LAVA's: job ids, states and healths, log lines, test results, devices (pure, no I/O).

The LAVA front (``lavarpc.py``) reads the store and hands the facts to these functions; they are plain so
unit tests pin LAVA's shapes (tests/unit/test_server_lavarpc.py).

* **Job ids**: LAVA's integer, or ``N.k`` for the ``k``-th sub-job of the MultiNode group whose first
  sub-job is ``N`` (what ``scheduler.jobs.submit`` answers for a MultiNode job, as LAVA does).
* **State** (LAVA's ``Submitted``, ``Scheduling``, ``Scheduled``, ``Running``, ``Canceling``,
  ``Finished``): waiting -> Submitted (Scheduled once a device is assigned); provision, allocated,
  reserve, test, cleanup -> Running (Canceling once a cancel is asked); complete, cancelled -> Finished.
* **Health** (``Unknown``, ``Complete``, ``Incomplete``, ``Canceled``): Unknown until final; then
  Canceled if a user cancelled the job (or its MultiNode group), else by the outcome: pass -> Complete,
  fail -> Incomplete.  convoy's outcome follows LAVA's
  rules (a failed test case does not fail a job; a raised definition, a timeout or a failed MultiNode
  call does), so LAVA's Complete/Incomplete mean the same here.
* **Logs**: one line per job event, in LAVA's log format (a YAML list of flow mappings ``- {"dt", "lvl",
  "msg"}``): state changes and phase starts/ends at ``info`` (``start: 1 provision``, the form lavacli's
  ``--quiet`` recognises; a failed phase's end at ``error``), each line of the test phase's output at
  ``target`` (the DUT's output in LAVA), other phases' output at ``debug``; once final, each test case
  at ``results`` and the verdict.  Lines are built from the job's event stream alone, so line ``n``
  never changes and lavacli's start-line offset is exact; a line still being written is held back until
  its newline (or its phase's end).  (A job's stream keeps its newest ~20000 events, ``jobs.EVENTS_MAXLEN``:
  a job with more output chunks than that loses its oldest lines, and numbering shifts as they go.)
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from convoy.coordinator.server.streams import event_time

LAVA_STATES = ("Submitted", "Scheduling", "Scheduled", "Running", "Canceling", "Finished")
LAVA_HEALTHS = ("Unknown", "Complete", "Incomplete", "Canceled")
#: LAVA's log levels (lavacli colours them)
LEVELS = ("debug", "info", "warning", "error", "exception", "target", "input", "feedback", "results")
_FINAL = ("complete", "cancelled")
_JOB_REF = re.compile(r"^\s*(\d{1,18})(?:\.(\d{1,6}))?\s*$")


# --- ids ----------------------------------------------------------------------------
def parse_job_ref(ref: Any) -> tuple[int, int | None]:
    """``(number, sub-job index or None)`` of a LAVA job id (``12``, ``"12"``, ``"12.1"``); ValueError else."""
    if isinstance(ref, bool):
        raise ValueError(f"not a job id: {ref!r}")
    if isinstance(ref, int):
        if ref < 0:
            raise ValueError(f"not a job id: {ref!r}")
        return ref, None
    match = _JOB_REF.match(str(ref))
    if not match:
        raise ValueError(f"not a job id: {str(ref)[:40]!r}")
    return int(match.group(1)), int(match.group(2)) if match.group(2) is not None else None


def sub_ids(first: int, count: int) -> list[str]:
    """LAVA's MultiNode sub-job ids, ``N.0`` ... ``N.count-1``."""
    return [f"{first}.{k}" for k in range(count)]


# --- state and health ------------------------------------------------------------------
def lava_state(state: str, *, cancel_requested: bool = False, device_assigned: bool = False) -> str:
    """LAVA's state name of a convoy job state."""
    if state in _FINAL:
        return "Finished"
    if cancel_requested:
        return "Canceling"
    if state == "waiting":
        return "Scheduled" if device_assigned else "Submitted"
    return "Running"


def lava_health(state: str, outcome: str, *, cancel_requested: bool = False) -> str:
    """LAVA's health name of a convoy job: its state, outcome (pass, fail, cancelled, running) and whether
    a user cancelled it (or its MultiNode group).  A MultiNode member ends in convoy's ``cancelled`` state
    whatever its outcome (its device is let go), so the outcome decides, not the state."""
    if state not in _FINAL:
        return "Unknown"
    if outcome == "cancelled" or cancel_requested:
        return "Canceled"
    return "Complete" if outcome == "pass" else "Incomplete"


def lava_datetime(value: str | float | None) -> datetime | None:
    """An ISO text or epoch seconds as a UTC datetime (None when missing or unreadable)."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- logs --------------------------------------------------------------------------
def log_dt(epoch: float) -> str:
    """LAVA's ``dt`` of a log line: UTC, microseconds, no zone (``2024-01-31T12:00:00.123000``)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def log_lines(events: Iterable[tuple[str, Mapping[str, str]]],
              closing: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The job's log lines from its events ``(stream id, fields)``, oldest first.

    ``closing`` (``{"lvl", "msg"}`` each) is appended at the job's final state change, with its time: the
    test cases and the verdict, known only once the job is final."""
    lines: list[dict[str, Any]] = []
    partial: dict[str, str] = {}
    numbers: dict[str, int] = {}

    def add(at: float, level: str, msg: Any) -> None:
        lines.append({"dt": log_dt(at), "lvl": level, "msg": msg})

    def flush(at: float, phase: str) -> None:
        rest = partial.pop(phase, "")
        if rest:
            add(at, _output_level(phase), rest.rstrip("\r"))

    for event_id, fields in events:
        at = event_time(event_id)
        kind = fields.get("type")
        if kind == "output":
            phase = fields.get("phase", "")
            text = partial.get(phase, "") + fields.get("data", "")
            *done, partial[phase] = text.split("\n")
            for line in done:
                add(at, _output_level(phase), line.rstrip("\r"))
        elif kind == "phase":
            phase = fields.get("phase", "")
            if fields.get("event") == "start":
                numbers[phase] = len(numbers) + 1
                add(at, "info", f"start: {numbers[phase]} {phase}")
            else:
                flush(at, phase)
                status = fields.get("status", "")
                add(at, "info" if status == "0" else "error",
                    f"end: {numbers.get(phase, 0)} {phase} (exit status {status})")
        elif kind == "state":
            state, previous = fields.get("state", ""), fields.get("from", "")
            add(at, "info", f"job {previous} -> {state}" if previous else f"job {state}")
            if state in _FINAL:
                for phase in list(partial):
                    flush(at, phase)
                for closing_line in closing:
                    add(at, str(closing_line.get("lvl", "info")), closing_line.get("msg", ""))
    return lines


def _output_level(phase: str) -> str:
    return "target" if phase == "test" else "debug"


# characters YAML's reader refuses, or reads as line breaks, even inside a quoted scalar
_NOT_YAML = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def yaml_line(line: Mapping[str, Any]) -> str:
    """One line of LAVA's log file: ``- {"dt": ..., "lvl": ..., "msg": ...}`` (a YAML flow mapping)."""
    text = json.dumps({"dt": line["dt"], "lvl": line["lvl"], "msg": line["msg"]}, ensure_ascii=False)
    text = _SURROGATE.sub("\ufffd", text)
    return "- " + _NOT_YAML.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


def log_text(lines: Sequence[Mapping[str, Any]], start: int = 0, end: int | None = None) -> str:
    """Lines ``start`` up to ``end`` (exclusive; None: all) as LAVA's log text."""
    start = max(0, int(start or 0))
    chosen = lines[start:] if end is None else lines[start:max(start, int(end))]
    return "".join(yaml_line(line) for line in chosen)


def closing_lines(cases: Iterable[Mapping[str, Any]], health: str, message: str = "") -> list[dict[str, Any]]:
    """What a final job's log ends with: a ``results`` line per test case, then the verdict."""
    out: list[dict[str, Any]] = []
    for case in cases:
        msg = {"case": case.get("case", ""), "definition": case.get("suite", ""), "result": case.get("result", "")}
        if case.get("measurement") is not None:
            msg["measurement"] = case["measurement"]
            if case.get("units"):
                msg["units"] = case["units"]
        out.append({"lvl": "results", "msg": msg})
    if health == "Complete":
        out.append({"lvl": "info", "msg": "Job finished correctly"})
    elif health == "Canceled":
        out.append({"lvl": "info", "msg": "Job canceled" + (f": {message}" if message else "")})
    else:
        out.append({"lvl": "error", "msg": "Job error" + (f": {message}" if message else "")})
    return out


# --- results --------------------------------------------------------------------------
def flat_cases(suites: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``convoy results``' suites (``{"name", "cases"}``) as one list of cases, each with its ``suite``."""
    return [{"suite": suite.get("name", ""), **case} for suite in suites for case in suite.get("cases", [])]


def result_rows(job: str, cases: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """LAVA's test case export (``results.get_testjob_results_yaml``): one mapping per case, in order."""
    rows = []
    for index, case in enumerate(cases, start=1):
        suite, name, result = str(case.get("suite", "")), str(case.get("case", "")), str(case.get("result", ""))
        when = lava_datetime(case.get("ended") or case.get("started"))
        metadata = {k: case[k] for k in ("definition", "set", "reference", "detail", "units", "measurement")
                    if case.get(k) not in (None, "")}
        metadata.update({"case": name, "result": result})
        rows.append({
            "id": str(index), "job": job, "suite": suite, "name": name, "result": result,
            "measurement": str(case["measurement"]) if case.get("measurement") is not None else None,
            "unit": str(case.get("units") or ""), "level": "", "logged": str(when) if when else None,
            "metadata": metadata, "url": f"/results/{job}/{suite}/{name}",
        })
    return rows


def results_yaml(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as the YAML text the ``results.*_yaml`` methods answer."""
    return yaml.safe_dump([dict(r) for r in rows], default_flow_style=False, allow_unicode=True, sort_keys=False)


# --- devices ---------------------------------------------------------------------------
_DEVICE_HEALTH = {"maintenance": "Maintenance", "offline": "Bad"}
_DEVICE_STATE = {"busy": "Running", "assigned": "Reserved"}


def device_row(name: str, device_type: str, health: str, occupancy: str, current_job: Any) -> dict[str, Any]:
    """One device of ``scheduler.devices.list``: LAVA's health (Good, Maintenance; Bad while its worker is
    offline: nothing is scheduled on it) and state (Idle, Reserved, Running)."""
    return {"hostname": name, "type": device_type, "health": _DEVICE_HEALTH.get(health, "Good"),
            "state": _DEVICE_STATE.get(occupancy, "Idle"), "current_job": current_job, "pipeline": True}
