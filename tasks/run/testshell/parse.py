"""LAVA's ``parse: pattern`` with ``fixupdict``: output lines of a definition turned into test cases.

Applied on the worker, by the session that reads the device's output line by
line, to the lines of the definition running (between its STARTRUN and
ENDRUN): the pattern is a Python regular expression (LAVA's are), which a
device's ``sed``/``awk`` would not read the same way.  As in LAVA, a line
matches when the pattern is found in it (``re.search``); its named groups
``test_case_id`` and ``result`` (and optionally ``measurement``, ``units``)
make the case, ``result`` mapped through ``fixupdict`` (``PASS: pass``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from convoy.config.testresults import RESULTS
from convoy.errors import ConvoyError
from convoy.tasks.run.testshell.markers import TestCase

__all__ = ["Parser", "parser_of"]

_CASE_ID_BAD = re.compile(r"[^A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class Parser:
    """A definition's ``parse:`` block, compiled."""

    pattern: re.Pattern[str]
    fixupdict: Mapping[str, str] = field(default_factory=dict)

    def match(self, line: str) -> TestCase | str | None:
        """The case a line makes; a string saying why a matching line makes none; None when it does not match."""
        found = self.pattern.search(line.rstrip("\r\n"))
        if found is None:
            return None
        groups = {k: v for k, v in found.groupdict().items() if v is not None}
        name = _CASE_ID_BAD.sub("_", groups.get("test_case_id", "").strip()).strip("_")
        if not name:
            return "parse pattern matched without a test_case_id"
        raw = groups.get("result", "").strip()
        result = self.fixupdict.get(raw, raw)
        if result not in RESULTS:
            return f"parse pattern: test case {name}: result {raw!r} is not one of {', '.join(RESULTS)} " \
                   "(map it with fixupdict)"
        measurement = groups.get("measurement", "").strip() or None
        units = groups.get("units", "").strip() or None if measurement else None
        return TestCase(name=name, result=result, measurement=measurement, units=units)


def parser_of(repository: Mapping[str, Any], where: str) -> Parser | None:
    """The definition's parser, or None without ``parse: pattern``; ConvoyError naming a bad pattern."""
    parse = repository.get("parse")
    if parse is None:
        return None
    if not isinstance(parse, dict) or not isinstance(parse.get("pattern"), str):
        raise ConvoyError(f"{where}: parse must be a mapping with a pattern (a regular expression)")
    fixup = parse.get("fixupdict") or {}
    if not isinstance(fixup, dict):
        raise ConvoyError(f"{where}: parse.fixupdict must be a mapping (PASS: pass, ...)")
    try:
        pattern = re.compile(parse["pattern"], re.MULTILINE)
    except re.error as exc:
        raise ConvoyError(f"{where}: parse.pattern is not a regular expression: {exc}") from None
    if "test_case_id" not in pattern.groupindex or "result" not in pattern.groupindex:
        raise ConvoyError(f"{where}: parse.pattern needs the named groups test_case_id and result")
    return Parser(pattern, {str(k): str(v) for k, v in fixup.items()})
