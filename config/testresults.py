"""LAVA-style test results: the case model, LAVA's outcome rules, JUnit XML.

A *case* is what one ``lava-test-case`` reports (or a MultiNode API call, or a
``lava-test-raise``): a plain dict with

- ``suite`` (str): LAVA names a definition's suite ``<index>_<name>``
  (``0_smoke-tests``); MultiNode calls and raised definitions go to ``lava``;
- ``case`` (str), ``result``: one of ``pass``, ``fail``, ``skip``, ``unknown``;
- optional ``measurement`` (a number, stored as its text) and ``units``;
- optional ``set`` (the ``lava-test-set`` name), ``reference`` (the
  ``lava-test-reference`` URL), ``definition`` (the definition's name),
  ``started`` / ``ended`` (epoch seconds), ``detail`` (why it failed: the
  ``lava-test-raise`` message, a MultiNode error).

:func:`normalize_case` checks one and says which field is wrong.

**Outcome (LAVA's rules)**: a failed test case does not fail the job; a
definition that raised (``lava-test-raise``), a timeout, a lost device (the
test shell's session ended without its end marker) or a failed case of the
``lava`` suite (a failed MultiNode call) does.  The test shell calls
:func:`test_phase_failed` (or :func:`test_phase_failure` for the reason) and
turns the answer into the test phase's exit status.

**JUnit** (:func:`junit_xml`, :func:`write_junit`): one ``<testsuites>``; per
job (each child of a multi job) and suite a ``<testsuite name="<role or job
id>/<suite>">`` (``<role>.<job id>`` when several children share a role); per
case a ``<testcase classname="<suite>" name="<case>">`` with ``<failure>`` for
fail, ``<skipped>`` for skip and ``<error type="unknown">`` for unknown
(LAVA's ``unknown`` means the case gave no verdict: a CI system should count
it neither as passed nor as an assertion that failed); a measurement becomes
the properties ``measurement`` and ``units`` of its testcase and the line
``measurement: 3.5 s`` in its ``<system-out>`` (most CI viewers show
system-out, few show a testcase's properties).  A job with no cases gets one
testcase per phase (suite ``<job>/phases``), failed when the phase's exit
status is not 0 (with the end of its output), so Testflinger jobs give useful
JUnit too; a job with cases gets only its failed phases there.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from convoy.errors import ConvoyError

RESULTS = ("pass", "fail", "skip", "unknown")
#: the suite of MultiNode API calls and of raised definitions, as in LAVA
LAVA_SUITE = "lava"
MAX_NAME = 256
MAX_UNITS = 64
MAX_REFERENCE = 1024
MAX_DETAIL = 1024
_TEXT_FIELDS = {"suite": MAX_NAME, "case": MAX_NAME, "units": MAX_UNITS, "set": MAX_NAME,
                "reference": MAX_REFERENCE, "definition": MAX_NAME, "detail": MAX_DETAIL}
_REQUIRED = ("suite", "case", "result")
FIELDS = ("suite", "case", "result", "measurement", "units", "set", "reference", "definition",
          "started", "ended", "detail")


class TestCaseError(ConvoyError, ValueError):
    """A test case is invalid; ``field`` names what is wrong."""

    __test__ = False  # not a pytest class

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"test case {field}: {message}")


def normalize_case(case: Mapping[str, Any]) -> dict[str, Any]:
    """The case checked and in its stored form (measurement as text, None fields dropped).

    Raises :class:`TestCaseError` naming the first wrong field.
    """
    unknown = sorted(set(case) - set(FIELDS))
    if unknown:
        raise TestCaseError(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    for name in _REQUIRED:
        if case.get(name) in (None, ""):
            raise TestCaseError(name, "missing")
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = case.get(name)
        if value is None:
            continue
        if name in _TEXT_FIELDS:
            out[name] = _text(name, value, _TEXT_FIELDS[name])
        elif name == "result":
            if value not in RESULTS:
                raise TestCaseError("result", f"{value!r} is not one of {', '.join(RESULTS)}")
            out[name] = value
        elif name == "measurement":
            out[name] = _measurement(value)
        else:  # started, ended
            out[name] = _seconds(name, value)
    return out


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise TestCaseError(name, f"must be text, not {type(value).__name__}")
    if len(value) > limit:
        raise TestCaseError(name, f"{len(value)} characters, at most {limit}")
    if any(ch < " " and not (name == "detail" and ch in "\t\n") for ch in value):
        raise TestCaseError(name, f"{value[:40]!r} holds a control character (a newline?)")
    return value


def _measurement(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TestCaseError("measurement", f"must be a number, not {type(value).__name__}")
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        raise TestCaseError("measurement", f"{text[:40]!r} is not a number") from None
    if not math.isfinite(number) or len(text) > 64:
        raise TestCaseError("measurement", f"{text[:40]!r} is not a finite number")
    return text


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TestCaseError(name, f"must be epoch seconds (a number), not {value!r}")
    return float(value)


# --- LAVA's outcome rules ----------------------------------------------------
#: the exit status ssh gives when the connection failed (the device was lost)
SSH_LOST = 255


def test_phase_failure(cases: Sequence[Mapping[str, Any]], *, raised: bool, timed_out: bool,
                       shell_status: int | None) -> str:
    """Why the test phase failed by LAVA's rules, or "" when it did not.

    ``cases`` are the cases the phase recorded; ``raised``: a definition
    called ``lava-test-raise``; ``timed_out``: the action's timeout ended it;
    ``shell_status``: the exit status of the session that ran the
    definitions, None when it ended without one (the device was lost).  A
    failed case in a definition's suite does not fail the phase; a failed case
    in the ``lava`` suite (a raised definition, a MultiNode call that failed)
    does, as LAVA makes such a job incomplete.  A non-zero status of the
    definitions' own commands does not: only ssh's 255 (connection lost).
    """
    if raised:
        return "a test definition raised (lava-test-raise)"
    if timed_out:
        return "the test action timed out"
    if shell_status is None or shell_status == SSH_LOST:
        return "the device was lost: the test shell ended without its end marker"
    for case in cases:
        if case.get("suite") == LAVA_SUITE and case.get("result") == "fail":
            return f"lava {case.get('case')} failed" + (f": {case['detail']}" if case.get("detail") else "")
    return ""


def test_phase_failed(cases: Sequence[Mapping[str, Any]], *, raised: bool, timed_out: bool,
                      shell_status: int | None) -> bool:
    """Whether the test phase failed by LAVA's rules (see :func:`test_phase_failure`)."""
    return bool(test_phase_failure(cases, raised=raised, timed_out=timed_out, shell_status=shell_status))


# their names start with "test": a test module that imports them must not have pytest collect them
test_phase_failure.__test__ = False  # type: ignore[attr-defined]
test_phase_failed.__test__ = False  # type: ignore[attr-defined]


# --- suites ----------------------------------------------------------------
def suites(cases: Iterable[Mapping[str, Any]],
           calls: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Cases grouped by suite in order of first appearance, the ``lava`` suite last.

    ``calls`` are the member's MultiNode API call records (``group.api_calls``:
    ``name``, ``result``, ``detail``?, ``time``); each becomes a case of the
    ``lava`` suite after the ``lava`` cases the job recorded itself.
    Each suite: ``{"name", "cases": [case without its "suite"]}``.
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        row = {k: v for k, v in case.items() if k != "suite"}
        by_name.setdefault(str(case.get("suite", "")), []).append(row)
    for call in calls:
        row = {"case": str(call.get("name", "")), "result": "pass" if call.get("result") == "pass" else "fail"}
        if call.get("detail"):
            row["detail"] = str(call["detail"])
        if isinstance(call.get("time"), (int, float)):
            row["ended"] = float(call["time"])
        by_name.setdefault(LAVA_SUITE, []).append(row)
    lava = by_name.pop(LAVA_SUITE, None)
    out = [{"name": name, "cases": rows} for name, rows in by_name.items()]
    if lava is not None:
        out.append({"name": LAVA_SUITE, "cases": lava})
    return out


# --- JUnit XML ---------------------------------------------------------------
#: a failed phase's output shown in its <failure>: the end, where the error usually is
PHASE_OUTPUT_TAIL = 4000
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
PHASES_SUITE = "phases"


def _xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (terminal escapes in output)."""
    return _NOT_XML.sub("\ufffd", text)


def _jobs(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The parent (or the single job) then each child, as JUnit reports them."""
    return [results, *results.get("children", ())]


def _phase_statuses(job: Mapping[str, Any]) -> list[tuple[str, int]]:
    return [(key[: -len("_status")], int(value)) for key, value in job.items()
            if key.endswith("_status") and isinstance(value, int) and not isinstance(value, bool)]


def junit(results: Mapping[str, Any]) -> Any:
    """``results`` (``job_results``) as a ``junitparser.JUnitXml`` (layout in the module docstring).

    A job with cases also gets a ``<job>/phases`` suite holding only its
    failed phases, so a job that failed by LAVA's rules (a raise, a timeout,
    a lost device) never reads as green in CI.
    """
    from junitparser import Error, Failure, JUnitXml, Properties, Property, Skipped, TestCase, TestSuite

    xml = JUnitXml(_xml_text(f"convoy job {results.get('job_id', '')}"))
    jobs = _jobs(results)
    roles = [job.get("role") for job in jobs]
    for job in jobs:
        role, job_id = job.get("role"), str(job.get("job_id", ""))
        # a role of count > 1 names several jobs: add the job id to tell them apart
        label = _xml_text(str(role) if role and roles.count(role) == 1 else f"{role}.{job_id}" if role else job_id)
        job_suites = job.get("test_results") or []
        for suite in job_suites:
            ts = TestSuite(_xml_text(f"{label}/{suite['name']}"))
            for case in suite["cases"]:
                tc = TestCase(_xml_text(str(case.get("case", ""))), _xml_text(str(suite["name"])), _duration(case))
                measured = _measured(case)
                if measured:
                    props = Properties()
                    for name, value in measured:
                        props.add_property(Property(name, _xml_text(value)))
                    tc.append(props)
                result = case.get("result")
                detail = _xml_text(str(case["detail"])) if case.get("detail") else None
                if result == "fail":
                    failure = Failure(detail or f"{case.get('case')} failed", "fail")
                    tc.result = [failure]
                elif result == "skip":
                    tc.result = [Skipped(detail or "skip", "skip")]
                elif result != "pass":
                    tc.result = [Error(detail or "unknown: the case gave no verdict", "unknown")]
                lines = [f"{name}: {value}" for name, value in _shown(case)]
                if lines:
                    tc.system_out = _xml_text("\n".join(lines))
                ts.add_testcase(tc)
            ts.update_statistics()
            xml.add_testsuite(ts)
        phases = _phase_statuses(job)
        if job_suites:
            phases = [(phase, status) for phase, status in phases if status != 0]
        if not phases:
            continue
        ts = TestSuite(f"{label}/{PHASES_SUITE}")
        for phase, status in phases:
            tc = TestCase(_xml_text(phase), PHASES_SUITE)
            if status != 0:
                failure = Failure(f"{phase} exited {status}", "exit-status")
                output = job.get(f"{phase}_output")
                if isinstance(output, str) and output:
                    failure.text = _xml_text(output[-PHASE_OUTPUT_TAIL:])
                tc.result = [failure]
            ts.add_testcase(tc)
        ts.update_statistics()
        xml.add_testsuite(ts)
    xml.update_statistics()
    return xml


def junit_xml(results: Mapping[str, Any]) -> str:
    """``results`` as JUnit XML text (see :func:`junit`)."""
    return str(junit(results).tostring().decode("utf-8"))


def write_junit(results: Mapping[str, Any], path: str) -> None:
    """Write ``results`` as a JUnit XML file (with its XML declaration) at ``path``."""
    junit(results).write(path, pretty=True)


def _duration(case: Mapping[str, Any]) -> float | None:
    started, ended = case.get("started"), case.get("ended")
    if isinstance(started, (int, float)) and isinstance(ended, (int, float)) and ended >= started:
        return round(float(ended) - float(started), 3)
    return None


def _measured(case: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(name, str(case[name])) for name in ("measurement", "units") if case.get(name) not in (None, "")]


def _shown(case: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What <system-out> says about a case: its measurement, set, reference and definition."""
    shown = []
    if case.get("measurement") not in (None, ""):
        shown.append(("measurement", f"{case['measurement']} {case.get('units') or ''}".strip()))
    for name in ("set", "reference", "definition"):
        if case.get(name):
            shown.append((name, str(case[name])))
    return shown
