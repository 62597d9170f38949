"""The marker lines the test shell prints on the device, parsed (pure: a line in, an event out).

The device-side helpers (``helpers/``) print LAVA's markers on the SSH
session's output; everything that is not a well-formed marker is plain
output.  A malformed or hostile marker is never an error: :func:`parse`
returns None for it and the line is shown as output.

==========================================================  ==============================
line                                                        event
==========================================================  ==============================
``<LAVA_SIGNAL_STARTRUN 0_smoke UUID>``                     :class:`StartRun`
``<LAVA_SIGNAL_ENDRUN 0_smoke UUID>``                       :class:`EndRun`
``<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=n RESULT=pass          :class:`TestCase`
MEASUREMENT=3.5 UNITS=s>`` (measurement, units optional)
``<LAVA_SIGNAL_TESTREFERENCE TEST_CASE_ID=n RESULT=pass     :class:`TestCase` (reference)
REFERENCE=url>``
``<LAVA_SIGNAL_TESTSET START name>`` / ``... STOP>``        :class:`TestSet`
``<LAVA_SIGNAL_TESTRAISE message>``                         :class:`Raise`
``<LAVA_SIGNAL_STARTTC n>`` / ``<LAVA_SIGNAL_ENDTC n>``     :class:`CaseBoundary` (LAVA's log
                                                            marks around a ``--shell`` case)
``<LAVA_MULTI_NODE> <LAVA_SEND ...> <CONVOY_CALL ID PROG    :class:`Call`
ARGS IPV4>``
``<LAVA_TEST_RUNNER EXIT>``                                 :class:`RunnerExit`
==========================================================  ==============================

``ARGS`` are the call's arguments joined by ``,`` (``-`` for none), each
``p`` + itself when it holds only ``[A-Za-z0-9_.:/=@+%-]`` (the helpers need no
fork to write it), else ``x`` + its bytes in hex; the reply lines are built by
:func:`reply_lines`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["API_PROGRAMS", "Call", "CaseBoundary", "EndRun", "Event", "Raise", "RunnerExit", "StartRun", "TestCase",
           "TestSet", "parse", "reply_lines"]

#: the MultiNode programs a device may call through the worker
API_PROGRAMS = frozenset({"lava-send", "lava-wait", "lava-wait-all", "lava-sync", "lava-group", "lava-role",
                          "lava-self", "lava-network"})
MAX_LINE = 65536
MAX_ARGS = 256

_NAME = r"[A-Za-z0-9_.,:+@/=-]{1,256}"
_RUN = re.compile(r"<LAVA_SIGNAL_(START|END)RUN ([A-Za-z0-9_.+-]{1,160}) ([A-Za-z0-9_-]{1,64})>")
_CASE = re.compile(rf"<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=({_NAME}) RESULT=(pass|fail|skip|unknown)"
                   r"(?: MEASUREMENT=([0-9.eE+-]{1,64}))?(?: UNITS=([A-Za-z0-9_.%/^*+-]{1,64}))?>")
_REFERENCE = re.compile(rf"<LAVA_SIGNAL_TESTREFERENCE TEST_CASE_ID=({_NAME}) RESULT=(pass|fail|skip|unknown) "
                        r"REFERENCE=(\S{1,1024})>")
_TC = re.compile(rf"<LAVA_SIGNAL_(START|END)TC ({_NAME})>")
_SET = re.compile(rf"<LAVA_SIGNAL_TESTSET (?:START ({_NAME})|STOP)>")
_RAISE = re.compile(r"<LAVA_SIGNAL_TESTRAISE ([^<>]{0,1024})>")
_WORD = r"(?:x[0-9a-f]*|p[A-Za-z0-9_.:/=@+%-]*)"
_CALL = re.compile(r"<LAVA_MULTI_NODE> <[A-Z_]{1,32}(?: [^\n]*)?> "
                   rf"<CONVOY_CALL ([0-9A-Za-z._-]{{1,64}}) (lava-[a-z-]{{1,16}}) (-|{_WORD}(?:,{_WORD})*) "
                   r"(-|(?:[0-9]{1,3}\.){3}[0-9]{1,3})>")
_EXIT = "<LAVA_TEST_RUNNER EXIT>"


@dataclass(frozen=True)
class StartRun:
    testrun: str
    uuid: str


@dataclass(frozen=True)
class EndRun:
    testrun: str
    uuid: str


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class

    name: str
    result: str
    measurement: str | None = None
    units: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class TestSet:
    __test__ = False

    name: str | None  #: None: the set ends


@dataclass(frozen=True)
class CaseBoundary:
    name: str
    start: bool


@dataclass(frozen=True)
class Raise:
    message: str


@dataclass(frozen=True)
class Call:
    call_id: str
    prog: str
    argv: tuple[str, ...]
    ipv4: str | None


@dataclass(frozen=True)
class RunnerExit:
    pass


Event = StartRun | EndRun | TestCase | TestSet | CaseBoundary | Raise | Call | RunnerExit


def parse(line: str) -> Event | None:
    """The event a marker line stands for, or None (plain output, or a marker not well formed)."""
    line = line.rstrip("\r\n")
    if len(line) > MAX_LINE or "<" not in line:
        return None
    if line == _EXIT:
        return RunnerExit()
    if line.startswith("<LAVA_MULTI_NODE> "):
        return _call(line)
    if not line.startswith("<LAVA_SIGNAL_"):
        return None
    if m := _RUN.fullmatch(line):
        return (StartRun if m[1] == "START" else EndRun)(m[2], m[3])
    if m := _CASE.fullmatch(line):
        return TestCase(m[1], m[2], m[3], m[4]) if _number(m[3]) else None
    if m := _REFERENCE.fullmatch(line):
        return TestCase(m[1], m[2], reference=m[3])
    if m := _TC.fullmatch(line):
        return CaseBoundary(m[2], m[1] == "START")
    if m := _SET.fullmatch(line):
        return TestSet(m[1])
    if m := _RAISE.fullmatch(line):
        return Raise(m[1].strip() or "raised")
    return None


def _number(text: str | None) -> bool:
    if text is None:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _call(line: str) -> Call | None:
    m = _CALL.fullmatch(line)
    if not m or m[2] not in API_PROGRAMS:
        return None
    argv: list[str] = []
    if m[3] != "-":
        words = m[3].split(",")
        if len(words) > MAX_ARGS:
            return None
        for word in words:
            if word[0] == "p":
                argv.append(word[1:])
                continue
            try:
                argv.append(bytes.fromhex(word[1:]).decode("utf-8"))
            except ValueError:  # odd length, or not UTF-8
                return None
    return Call(m[1], m[2], tuple(argv), None if m[4] == "-" else m[4])


def reply_lines(call_id: str, code: int, stdout: str = "", stderr: str = "", cache: list[str] | None = None,
                network_cache: list[str] | None = None) -> list[str]:
    """The lines the worker writes to the session's input to answer call ``call_id`` (each ending ``\\n``)."""
    head = f"<LAVA_MULTI_NODE_REPLY {call_id}"
    lines = [f"{head} O> {text}" for text in _lines(stdout)]
    lines += [f"{head} E> {text}" for text in _lines(stderr)]
    for kind, content in (("C", cache), ("N", network_cache)):
        if content is not None:
            lines.append(f"{head} {kind}0>")
            lines += [f"{head} {kind}> {text}" for text in _lines("\n".join(content))]
    lines.append(f"{head} END {int(code)}>")
    return [line + "\n" for line in lines]


def _lines(text: str) -> list[str]:
    """Text as single lines the device's ``read`` takes whole (no NUL, no carriage return)."""
    return [line.replace("\0", "").replace("\r", "") for line in text.splitlines()]
