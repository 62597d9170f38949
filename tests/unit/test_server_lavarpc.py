"""The LAVA front's pure parts: ids, states and healths, log lines, results, devices, and safe XML-RPC parsing.

Log lines and results are read back with lavacli's own YAML loader (ruamel, safe), as lavacli reads them.
"""
from __future__ import annotations

import xmlrpc.client

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from lavacli.utils import safe_yaml as lavacli_yaml

from convoy.coordinator.server import lava_map, lava_methods, lavarpc
from convoy.coordinator.server.lava_xml import MAX_REQUEST, BadRequest, answer, fault, parse_call


# --- ids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref, expected", [(12, (12, None)), ("12", (12, None)), (" 7 ", (7, None)),
                                           ("12.0", (12, 0)), ("12.3", (12, 3))])
def test_job_refs_are_integers_or_multinode_sub_ids(ref, expected):
    assert lava_map.parse_job_ref(ref) == expected


@pytest.mark.parametrize("ref", ["", "abc", "1.2.3", "-1", -1, True, "1e3", "12.", None, "9" * 40])
def test_anything_else_is_not_a_job_id(ref):
    with pytest.raises(ValueError):
        lava_map.parse_job_ref(ref)


def test_sub_ids_are_lava_s():
    assert lava_map.sub_ids(41, 3) == ["41.0", "41.1", "41.2"]


# --- state and health ---------------------------------------------------------------------------------
@pytest.mark.parametrize("state, cancel, device, expected", [
    ("waiting", False, False, "Submitted"), ("waiting", False, True, "Scheduled"),
    ("provision", False, True, "Running"), ("allocated", False, True, "Running"), ("reserve", False, True, "Running"),
    ("test", False, True, "Running"), ("cleanup", False, True, "Running"), ("test", True, True, "Canceling"),
    ("waiting", True, False, "Canceling"), ("complete", False, True, "Finished"),
    ("cancelled", True, True, "Finished")])
def test_convoy_states_map_to_lava_states(state, cancel, device, expected):
    got = lava_map.lava_state(state, cancel_requested=cancel, device_assigned=device)
    assert got == expected and got in lava_map.LAVA_STATES


@pytest.mark.parametrize("state, outcome, cancel, expected", [
    ("test", "running", False, "Unknown"), ("test", "running", True, "Unknown"),
    ("complete", "pass", False, "Complete"), ("complete", "fail", False, "Incomplete"),
    ("cancelled", "cancelled", True, "Canceled"), ("cancelled", "cancelled", False, "Canceled"),
    # a MultiNode member ends in convoy's cancelled state whatever its outcome: the outcome decides
    ("cancelled", "pass", False, "Complete"), ("cancelled", "fail", False, "Incomplete"),
    ("cancelled", "fail", True, "Canceled")])
def test_health_follows_outcome_and_cancel(state, outcome, cancel, expected):
    got = lava_map.lava_health(state, outcome, cancel_requested=cancel)
    assert got == expected and got in lava_map.LAVA_HEALTHS


def test_datetimes_from_iso_or_epoch_in_utc():
    assert str(lava_map.lava_datetime("2026-01-02T03:04:05.678+00:00")) == "2026-01-02 03:04:05.678000+00:00"
    assert str(lava_map.lava_datetime(0)) == "1970-01-01 00:00:00+00:00"
    assert lava_map.lava_datetime(None) is None and lava_map.lava_datetime("soon") is None


# --- logs ----------------------------------------------------------------------------------------------
def events() -> list[tuple[str, dict[str, str]]]:
    return [
        ("1700000000000-0", {"type": "state", "state": "waiting", "from": ""}),
        ("1700000001000-0", {"type": "state", "state": "provision", "from": "waiting"}),
        ("1700000001001-0", {"type": "phase", "phase": "provision", "event": "start"}),
        ("1700000001002-0", {"type": "output", "phase": "provision", "data": "booting\n"}),
        ("1700000001003-0", {"type": "phase", "phase": "provision", "event": "end", "status": "0"}),
        ("1700000002000-0", {"type": "phase", "phase": "test", "event": "start"}),
        ("1700000002001-0", {"type": "output", "phase": "test", "data": "hel"}),
        ("1700000002002-0", {"type": "output", "phase": "test", "data": "lo\r\nwor"}),
        ("1700000002003-0", {"type": "output", "phase": "test", "data": "ld\nno newline"}),
        ("1700000003000-0", {"type": "phase", "phase": "test", "event": "end", "status": "3"}),
        ("1700000003001-0", {"type": "output", "phase": "cleanup", "data": "half a line"}),
        ("1700000004000-0", {"type": "state", "state": "complete", "from": "test"}),
    ]


def test_events_become_lava_log_lines():
    closing = lava_map.closing_lines([{"suite": "0_smoke", "case": "boot", "result": "pass", "measurement": "3.5",
                                       "units": "s"}], "Incomplete", "test_cmds exited 3")
    lines = lava_map.log_lines(events(), closing)
    assert [(line["lvl"], line["msg"]) for line in lines] == [
        ("info", "job waiting"), ("info", "job waiting -> provision"), ("info", "start: 1 provision"),
        ("debug", "booting"), ("info", "end: 1 provision (exit status 0)"), ("info", "start: 2 test"),
        ("target", "hello"), ("target", "world"), ("target", "no newline"), ("error", "end: 2 test (exit status 3)"),
        ("info", "job test -> complete"), ("debug", "half a line"),
        ("results", {"case": "boot", "definition": "0_smoke", "result": "pass", "measurement": "3.5", "units": "s"}),
        ("error", "Job error: test_cmds exited 3")]
    assert lines[0]["dt"] == "2023-11-14T22:13:20.000000" and lines[6]["dt"] == "2023-11-14T22:13:22.002000"
    assert {line["lvl"] for line in lines} <= set(lava_map.LEVELS)


def test_a_line_once_given_never_changes_so_the_start_offset_is_exact():
    whole = lava_map.log_lines(events())
    for n in range(len(events()) - 1):  # every prefix before the final state change
        assert whole[:len(lava_map.log_lines(events()[:n]))] == lava_map.log_lines(events()[:n])
    held = lava_map.log_lines(events()[:7])  # "hel" is not a line yet
    assert held[-1]["msg"] == "start: 2 test"


def test_log_text_is_lava_s_yaml_list_read_back_by_lavacli_from_any_start_line():
    lines = lava_map.log_lines(events())
    text = lava_map.log_text(lines)
    assert text.splitlines()[0] == '- {"dt": "2023-11-14T22:13:20.000000", "lvl": "info", "msg": "job waiting"}'
    assert lavacli_yaml.load(text) == lines
    assert lavacli_yaml.load(lava_map.log_text(lines, 3)) == lines[3:]
    assert lavacli_yaml.load(lava_map.log_text(lines, 3, 5)) == lines[3:5]
    assert lava_map.log_text(lines, len(lines)) == "" and lava_map.log_text(lines, 5, 2) == ""


@given(st.text())
def test_any_output_line_survives_lava_s_yaml(msg):
    line = {"dt": "2026-01-01T00:00:00.000000", "lvl": "target", "msg": msg}
    (back,) = lavacli_yaml.load(lava_map.yaml_line(line))
    expected = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in msg)
    assert back == {**line, "msg": expected}
    assert yaml.safe_load(lava_map.yaml_line(line)) == [{**line, "msg": expected}]


def test_the_log_ends_with_the_verdict():
    assert lava_map.closing_lines([], "Complete") == [{"lvl": "info", "msg": "Job finished correctly"}]
    assert lava_map.closing_lines([], "Canceled", "cancelled by user") == [
        {"lvl": "info", "msg": "Job canceled: cancelled by user"}]


# --- results ------------------------------------------------------------------------------------------
def test_results_are_lava_s_test_case_export():
    suites = [{"name": "0_smoke", "cases": [{"case": "boot", "result": "pass", "measurement": "3.5", "units": "s",
                                            "definition": "0_smoke", "ended": 1700000000.5}]},
              {"name": "lava", "cases": [{"case": "multinode-sync", "result": "fail", "detail": "timed out"}]}]
    cases = lava_map.flat_cases(suites)
    assert [(c["suite"], c["case"]) for c in cases] == [("0_smoke", "boot"), ("lava", "multinode-sync")]
    rows = lavacli_yaml.load(lava_map.results_yaml(lava_map.result_rows("41.1", cases)))
    assert rows[0] == {"id": "1", "job": "41.1", "suite": "0_smoke", "name": "boot", "result": "pass",
                       "measurement": "3.5", "unit": "s", "level": "", "logged": "2023-11-14 22:13:20.500000+00:00",
                       "metadata": {"definition": "0_smoke", "units": "s", "measurement": "3.5", "case": "boot",
                                    "result": "pass"},
                       "url": "/results/41.1/0_smoke/boot"}
    assert rows[1]["measurement"] is None and rows[1]["logged"] is None
    assert rows[1]["metadata"] == {"detail": "timed out", "case": "multinode-sync", "result": "fail"}
    assert lava_map.results_yaml([]) == "[]\n"


# --- devices --------------------------------------------------------------------------------------
@pytest.mark.parametrize("health, occupancy, lava_health, lava_state", [
    ("idle", "idle", "Good", "Idle"), ("assigned", "assigned", "Good", "Reserved"), ("busy", "busy", "Good", "Running"),
    ("maintenance", "idle", "Maintenance", "Idle"), ("offline", "busy", "Bad", "Running")])
def test_devices_in_lava_s_words(health, occupancy, lava_health, lava_state):
    row = lava_map.device_row("qemu-01", "qemu", health, occupancy, 7 if occupancy == "busy" else None)
    assert row == {"hostname": "qemu-01", "type": "qemu", "health": lava_health, "state": lava_state,
                   "current_job": 7 if occupancy == "busy" else None, "pipeline": True}


# --- XML-RPC on the wire ------------------------------------------------------------------------------------
def test_a_call_is_parsed_and_answers_marshalled():
    body = xmlrpc.client.dumps(("12.1", 0, None), "scheduler.jobs.logs", allow_none=True).encode()
    assert parse_call(body) == ("scheduler.jobs.logs", ("12.1", 0, None))
    assert xmlrpc.client.loads(answer([True, xmlrpc.client.Binary(b"- {}\n")]))[0][0][1].data == b"- {}\n"
    assert xmlrpc.client.loads(answer(None), use_builtin_types=True)[0] == (None,)
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(fault(404, "Job '12' was not found."))
    assert (caught.value.faultCode, caught.value.faultString) == (404, "Job '12' was not found.")


LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
          b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><methodCall><methodName>&c;</methodName></methodCall>')
EXTERNAL = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<methodCall><methodName>&x;</methodName></methodCall>')
PARAMETER = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
             b'<methodCall><methodName>m</methodName></methodCall>')
BARE_DOCTYPE = b'<?xml version="1.0"?><!DOCTYPE methodCall><methodCall><methodName>m</methodName></methodCall>'


@pytest.mark.parametrize("body", [LAUGHS, EXTERNAL, PARAMETER, BARE_DOCTYPE])
def test_dtds_and_entities_are_refused_before_anything_expands(body):
    with pytest.raises(BadRequest, match="document type declarations"):
        parse_call(body)


@pytest.mark.parametrize("body", [b"", b"not xml", b"<methodCall/>", b"<methodResponse><params/></methodResponse>",
                                  b"<methodCall><methodName>m</methodName><params><param><value><int>x</int>"
                                  b"</value></param></params></methodCall>",
                                  xmlrpc.client.dumps(xmlrpc.client.Fault(1, "x"), methodresponse=True).encode()])
def test_what_is_not_a_call_is_refused_saying_so(body):
    with pytest.raises(BadRequest, match="XML-RPC"):
        parse_call(body)


def test_an_oversized_request_is_refused_unread():
    with pytest.raises(BadRequest, match="larger than"):
        parse_call(b" " * (MAX_REQUEST + 1))


def test_parse_errors_and_unknown_methods_are_faults_with_xml_rpc_s_codes():
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(lavarpc.handle(None, LAUGHS))  # type: ignore[arg-type]  # refused before the request
    assert caught.value.faultCode == -32700 and "document type" in caught.value.faultString
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(lavarpc.handle(None, xmlrpc.client.dumps((), "scheduler.jobs.lsit").encode()))  # type: ignore[arg-type]
    assert caught.value.faultCode == -32601 and "scheduler.jobs.lsit" in caught.value.faultString


# --- idempotent submit ------------------------------------------------------------------------------------
class Keys:
    """A fake ``submit_as`` store: a key answers the job first made with it."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.when: dict[str, float] = {}
        self.clock = 1000.0

    def submit(self, key: str) -> str:
        if key not in self.jobs:
            self.jobs[key] = f"job-{len(self.jobs)}"
            self.when[self.jobs[key]] = self.clock
        return self.jobs[key]

    def once(self, text: str) -> str:
        return lava_methods.submit_once(text, self.submit, self.when.__getitem__, lambda: self.clock)


def test_the_same_text_within_the_window_is_one_job_and_after_it_a_new_one_itself_idempotent():
    keys = Keys()
    first = keys.once("job: a")
    keys.clock += 5
    assert keys.once("job: a") == first  # a retry after a lost answer
    assert keys.once("job: b") != first  # another text
    keys.clock += lava_methods.RESUBMIT_WINDOW
    second = keys.once("job: a")
    assert second != first
    keys.clock += 1
    assert keys.once("job: a") == second  # the new one's retry
    keys.clock += lava_methods.RESUBMIT_WINDOW
    third = keys.once("job: a")
    assert third not in (first, second)
    assert all(key.startswith("lava-submit:") for key in keys.jobs)


# --- the route (in process; no credentials: nothing below touches Redis) --------------------------------------
@pytest.fixture(scope="module")
def rpc():
    from fastapi.testclient import TestClient

    from convoy.coordinator.server.app import create_app

    with TestClient(create_app()) as client:
        yield client


def call(rpc, body: bytes, path: str = "/RPC2"):
    reply = rpc.post(path, content=body, headers={"Content-Type": "text/xml"})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/xml")
    return xmlrpc.client.loads(reply.content)[0][0]


@pytest.mark.parametrize("path", ["/RPC2", "/RPC2/"])
def test_the_endpoint_answers_lavacli_s_first_call_at_both_paths(rpc, path):
    version = call(rpc, xmlrpc.client.dumps((), "system.version").encode(), path)
    assert version.startswith(lava_methods.LAVA_API_VERSION + "+convoy-")
    from lavacli.utils import parse_version

    assert parse_version(version) == (2025, 10)


def test_the_route_answers_faults_for_bad_calls(rpc):
    methods = call(rpc, xmlrpc.client.dumps((), "system.listMethods").encode())
    assert {"scheduler.jobs.submit", "scheduler.jobs.logs", "results.get_testjob_results_yaml"} <= set(methods)
    assert "jobs.logs" in call(rpc, xmlrpc.client.dumps(("scheduler.jobs.logs",), "system.methodHelp").encode())
    too_many = xmlrpc.client.dumps((1, 2), "system.version").encode()
    for body, code in ((too_many, -32602), (b"x" * (MAX_REQUEST + 1), -32700), (LAUGHS, -32700)):
        with pytest.raises(xmlrpc.client.Fault) as caught:
            call(rpc, body)
        assert caught.value.faultCode == code


def test_a_submitted_text_naming_a_server_file_is_text_never_read_from_disk(tmp_path):
    """``access.submit_as`` (every front's submit): a str is the caller's YAML, not a path to load."""
    import dataclasses
    from types import SimpleNamespace

    from convoy.config.settings import load_settings
    from convoy.coordinator.server import access, auth
    from convoy.coordinator.server.app import ServerConfig
    from convoy.errors import JobValidationError

    secret_job = tmp_path / "server-side.yaml"
    secret_job.write_text("job_queue: q\ntest_data: {test_cmds: echo read from the server's disk}\n")
    nowhere = dataclasses.replace(load_settings(), redis_url="redis://127.0.0.1:1/0")  # never a real Redis
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(config=ServerConfig(nowhere))))
    with pytest.raises(JobValidationError, match="must be a mapping"):  # refused before any Redis is asked
        access.submit_as(request, auth.Identity(), str(secret_job))  # type: ignore[arg-type]
