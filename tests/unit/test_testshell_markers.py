"""The test shell's marker lines: a table of lines and the events they stand for; hostile lines are output."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convoy.tasks.run.testshell.markers import (
    Call,
    CaseBoundary,
    EndRun,
    Raise,
    RunnerExit,
    StartRun,
    TestCase,
    TestSet,
    parse,
    reply_lines,
)


def hexed(*args: str) -> str:
    return ",".join("x" + a.encode().hex() for a in args) or "-"


@pytest.mark.parametrize(("line", "event"), [
    ("<LAVA_SIGNAL_STARTRUN 0_smoke 1234-abcd>\n", StartRun("0_smoke", "1234-abcd")),
    ("<LAVA_SIGNAL_ENDRUN 0_smoke 1234-abcd>", EndRun("0_smoke", "1234-abcd")),
    ("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=boot RESULT=pass>", TestCase("boot", "pass")),
    ("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=bw RESULT=fail MEASUREMENT=9.4e2 UNITS=Mbits/s>",
     TestCase("bw", "fail", "9.4e2", "Mbits/s")),
    ("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=t RESULT=skip UNITS=s>", TestCase("t", "skip", None, "s")),
    ("<LAVA_SIGNAL_TESTREFERENCE TEST_CASE_ID=bug RESULT=pass REFERENCE=https://x.org/1?a=b>",
     TestCase("bug", "pass", reference="https://x.org/1?a=b")),
    ("<LAVA_SIGNAL_TESTSET START network>", TestSet("network")),
    ("<LAVA_SIGNAL_TESTSET STOP>", TestSet(None)),
    ("<LAVA_SIGNAL_STARTTC probe>", CaseBoundary("probe", True)),
    ("<LAVA_SIGNAL_ENDTC probe>", CaseBoundary("probe", False)),
    ("<LAVA_SIGNAL_TESTRAISE disk is missing>", Raise("disk is missing")),
    ("<LAVA_SIGNAL_TESTRAISE >", Raise("raised")),
    ("<LAVA_TEST_RUNNER EXIT>\r\n", RunnerExit()),
    (f"<LAVA_MULTI_NODE> <LAVA_SEND ready ip=1> <CONVOY_CALL 12.ab lava-send {hexed('ready', 'v=a b=c')} ->",
     Call("12.ab", "lava-send", ("ready", "v=a b=c"), None)),
    ("<LAVA_MULTI_NODE> <LAVA_SELF> <CONVOY_CALL 1.2 lava-self - ->", Call("1.2", "lava-self", (), None)),
    (f"<LAVA_MULTI_NODE> <LAVA_NETWORK broadcast eth0> <CONVOY_CALL 7 lava-network {hexed('broadcast', 'eth0')} "
     "10.1.2.3>", Call("7", "lava-network", ("broadcast", "eth0"), "10.1.2.3")),
    (f"<LAVA_MULTI_NODE> <LAVA_WAIT x> <CONVOY_CALL 3 lava-wait {hexed('')} ->", Call("3", "lava-wait", ("",), None)),
    # plain words (what the helpers send without forking), mixed with hex ones
    ("<LAVA_MULTI_NODE> <LAVA_SEND m1 ip=10.0.0.2> <CONVOY_CALL 9.1f lava-send pm1,pip=10.0.0.2 ->",
     Call("9.1f", "lava-send", ("m1", "ip=10.0.0.2"), None)),
    (f"<LAVA_MULTI_NODE> <LAVA_SEND m v=a b> <CONVOY_CALL 4 lava-send pm,{hexed('v=a b')},p ->",
     Call("4", "lava-send", ("m", "v=a b", ""), None)),
])
def test_markers_become_events(line, event):
    assert parse(line) == event


@pytest.mark.parametrize("line", [
    "plain output",
    "",
    "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=maybe>",               # not a result
    "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a b RESULT=pass>",              # a name with a space
    "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass MEASUREMENT=1.2.3>",  # not a number
    "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass> trailing",
    "prefix <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>",
    "<LAVA_SIGNAL_STARTRUN ../x y>",
    "<LAVA_SIGNAL_TESTRAISE a <nested> one>",
    "<LAVA_MULTI_NODE> <LAVA_SEND x> <CONVOY_CALL 1 rm 78 ->",             # not an API program
    "<LAVA_MULTI_NODE> <LAVA_SEND x> <CONVOY_CALL 1 lava-send x7 ->",      # odd hex
    "<LAVA_MULTI_NODE> <LAVA_SEND x> <CONVOY_CALL 1 lava-send xff ->",     # not UTF-8
    "<LAVA_MULTI_NODE> <LAVA_SEND x> <CONVOY_CALL 1 lava-send 78 ->",      # no x prefix
    "<LAVA_MULTI_NODE> <LAVA_SEND x> <CONVOY_CALL 1 lava-send pa b ->",    # a space in a plain word
    "<LAVA_MULTI_NODE> <LAVA_SEND x> <CONVOY_CALL 1 lava-send pa;b ->",    # not a plain character
    "<LAVA_MULTI_NODE> <LAVA_SEND x> <CONVOY_CALL 1 lava-send - 1.2.3.4.5.6.7>",
    "<LAVA_MULTI_NODE> <LAVA_SEND x>",                                     # LAVA's own form: no call to relay
    "<LAVA_MULTI_NODE> <LAVA_SEND x> <CONVOY_CALL id;rm lava-send - ->",
    "<LAVA_TEST_RUNNER EXIT> ",
    "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=" + "a" * 70000 + " RESULT=pass>",
])
def test_anything_else_is_output(line):
    assert parse(line) is None


@given(st.text(max_size=300))
def test_no_line_crashes_the_parser(line):
    parse(line)
    parse("<LAVA_SIGNAL_" + line)
    parse("<LAVA_MULTI_NODE> <LAVA_SEND " + line)


def test_a_reply_is_one_line_per_output_line_and_cache_line_then_the_end():
    lines = reply_lines("9.f", 0, stdout="a\nb c\n", stderr="oops\r\n", cache=["k=v w", "x=\0y"])
    assert lines == ["<LAVA_MULTI_NODE_REPLY 9.f O> a\n", "<LAVA_MULTI_NODE_REPLY 9.f O> b c\n",
                     "<LAVA_MULTI_NODE_REPLY 9.f E> oops\n", "<LAVA_MULTI_NODE_REPLY 9.f C0>\n",
                     "<LAVA_MULTI_NODE_REPLY 9.f C> k=v w\n", "<LAVA_MULTI_NODE_REPLY 9.f C> x=y\n",
                     "<LAVA_MULTI_NODE_REPLY 9.f END 0>\n"]
    assert reply_lines("1", 1, network_cache=[])[-2:] == ["<LAVA_MULTI_NODE_REPLY 1 N0>\n",
                                                          "<LAVA_MULTI_NODE_REPLY 1 END 1>\n"]
