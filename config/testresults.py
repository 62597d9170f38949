"""LAVA-style test results: the case model, LAVA's outcome rules, JUnit XML.

A *case* is what one ``lava-test-case`` reports (or a MultiNode API call, or a
``lava-test-raise``): a plain dict with

- ``suite`` (str): LAVA names a definition's suite ``<index>_<name>``
  (``0_smoke-tests``); MultiNode calls and raised definitions go to ``lava``;
- ``case`` (str), ``result``: one of ``pass``, ``fail``, ``skip``, ``unknown``;
- optional ``measurement`` (a number, stored as its text) and ``units``;
- optional ``set`` (the ``lava-test-set`` name), ``reference`` (the
  ``lava-test-reference`` URL), ``definition`` (the definition's name),
  ``started`` / ``ended`` (epoch seconds).

:func:`normalize_case` checks one and says which field is wrong.

**Outcome (LAVA's rules)**: a failed test case does not fail the job; a
definition that raised (``lava-test-raise``), a timeout, or a lost device (the
test shell's session ended without its end marker) does.
:func:`test_phase_failed` applies them for the test shell, which turns its
answer into the test phase's exit status.

**JUnit** (:func:`junit_xml`): one ``<testsuites>``; per job and suite a
``<testsuite name="<role or job id>/<suite>">``; per case a ``<testcase
classname="<suite>" name="<case>">`` with ``<failure>`` for fail,
``<skipped>`` for skip and ``<error type="unknown">`` for unknown (LAVA's
``unknown`` means the case gave no verdict: a CI system should not count it as
passed, nor as a test's assertion failing); a measurement becomes the
properties ``measurement`` and ``units`` and the line ``measurement: 3.5 s`` in
``<system-out>`` (most CI viewers show system-out, few show properties).  A job
with no cases gets one testcase per phase (``<job>/phases``), failed when the
phase's exit status is not 0, so Testflinger jobs give useful JUnit too.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from convoy.errors import ConvoyError

RESULTS = ("pass", "fail", "skip", "unknown")
#: the suite of MultiNode API calls and of raised definitions, as in LAVA
LAVA_SUITE = "lava"
MAX_NAME = 256
MAX_UNITS = 64
MAX_REFERENCE = 1024
_TEXT_FIELDS = {"suite": MAX_NAME, "case": MAX_NAME, "units": MAX_UNITS, "set": MAX_NAME,
                "reference": MAX_REFERENCE, "definition": MAX_NAME}
_REQUIRED = ("suite", "case", "result")
FIELDS = ("suite", "case", "result", "measurement", "units", "set", "reference", "definition",
          "started", "ended")


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
    if any(ch < " " for ch in value):
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
