"""The Testflinger shapes ``convoy server`` answers with (coordinator/server/testflinger_shapes.py), as
testflinger-cli reads them: flat results, output by fragments, agents, error bodies."""
from __future__ import annotations

import uuid

from convoy.coordinator.server import testflinger_shapes as shapes
from convoy.coordinator.server.streams import event_time
from convoy.errors import FieldError


def test_job_ids_must_be_uuids() -> None:
    assert shapes.is_uuid(str(uuid.uuid4()))
    assert not shapes.is_uuid("not-a-job")
    assert not shapes.is_uuid("")


def test_error_bodies_are_testflingers_and_name_each_field() -> None:
    assert shapes.error_body("no") == {"message": "no", "detail": {}}
    body = shapes.validation_body([FieldError("job_queue", "required field"), FieldError("", "not a mapping"),
                                   FieldError("job_queue", "again")])
    assert body["message"] == "Validation error"
    assert body["detail"] == {"json": {"job_queue": ["required field", "again"], "_schema": ["not a mapping"]}}
    assert body["errors"][0] == {"field": "job_queue", "message": "required field"}


def test_only_the_cancel_action_is_taken() -> None:
    assert shapes.action_errors({"action": "cancel"}) == []
    [error] = shapes.action_errors({"action": "pause"})
    assert (error.path, error.message) == ("action", "Must be one of: cancel.")
    [error] = shapes.action_errors({})
    assert (error.path, error.message) == ("action", "Missing data for required field.")
    assert [e.path for e in shapes.action_errors({"action": 3, "extra": 1})] == ["action", "extra"]
    assert [e.path for e in shapes.action_errors(["cancel"])] == [""]


def test_job_shape_keeps_testflingers_fields_and_adds_the_id() -> None:
    document = {"job_queue": "rpi", "global_timeout": 3600.0, "test_data": {"test_cmds": "true"},
                "timeouts": {"multinode": 600}}
    shown = shapes.job_shape("abc", document)
    assert shown == {"job_queue": "rpi", "global_timeout": 3600, "test_data": {"test_cmds": "true"},
                     "job_id": "abc", "exclude_agents": []}
    assert isinstance(shown["global_timeout"], int)


def test_result_shape_is_flat_with_int_statuses_and_string_outputs() -> None:
    results = {"job_id": "j", "job_state": "complete", "outcome": "pass", "provision_status": 0,
               "provision_output": None, "test_status": 1, "test_output": "hi\n", "device_info": {"ip": "1"},
               "test_results": []}
    shaped = shapes.result_shape(results)
    assert shaped["job_state"] == "complete" and shaped["test_status"] == 1 and shaped["test_output"] == "hi\n"
    assert shaped["provision_output"] == "" and shaped["device_info"] == {"ip": "1"}
    assert shaped["outcome"] == "pass"  # convoy's extras stay
    assert "device_info" not in shapes.result_shape({"job_state": "waiting", "device_info": "junk"})


EVENTS = [
    ("1000-0", {"type": "state", "state": "waiting", "from": ""}),
    ("2000-0", {"type": "phase", "phase": "provision", "event": "start"}),
    ("2500-0", {"type": "output", "phase": "provision", "data": "booting\n"}),
    ("3000-0", {"type": "output", "phase": "test", "data": "one\n"}),
    ("3000-1", {"type": "output", "phase": "test", "data": "two\n"}),
    ("4000-0", {"type": "output", "phase": "cleanup", "data": "bye\n"}),
]


def test_fragments_are_the_output_events_numbered_across_the_job() -> None:
    fragments = shapes.fragments_of(EVENTS)
    assert [(f.number, f.phase, f.text) for f in fragments] == [
        (0, "provision", "booting\n"), (1, "test", "one\n"), (2, "test", "two\n"), (3, "cleanup", "bye\n")]
    assert fragments[0].at == 2.5
    assert event_time("1733212345678-3") == 1733212345.678


def test_log_body_has_every_testflinger_phase_from_start_fragment_on() -> None:
    fragments = shapes.fragments_of(EVENTS)
    body = shapes.log_body(fragments, "output")
    assert list(body) == ["output"]
    assert list(body["output"]) == list(shapes.TF_PHASES)
    assert body["output"]["test"] == {"last_fragment_number": 2, "log_data": "one\ntwo\n"}
    assert body["output"]["setup"] == {"last_fragment_number": -1, "log_data": ""}
    later = shapes.log_body(fragments, "output", start=2)["output"]
    assert later["provision"]["last_fragment_number"] == -1
    assert later["test"] == {"last_fragment_number": 2, "log_data": "two\n"}
    assert later["cleanup"] == {"last_fragment_number": 3, "log_data": "bye\n"}
    only = shapes.log_body(fragments, "output", phase="cleanup")
    assert only == {"output": {"cleanup": {"last_fragment_number": 3, "log_data": "bye\n"}}}
    since = shapes.log_body(fragments, "output", since=3.0)["output"]
    assert since["provision"]["log_data"] == "" and since["test"]["log_data"] == "one\ntwo\n"
    assert shapes.log_body([], "serial")["serial"]["test"] == {"last_fragment_number": -1, "log_data": ""}


def test_a_poller_joining_fragments_gets_the_whole_output_once() -> None:
    fragments = shapes.fragments_of(EVENTS)
    seen, start = "", 0
    for visible in range(len(fragments) + 1):  # the job writes one more fragment between polls
        body = shapes.log_body(fragments[:visible], "output", start=start)["output"]
        numbers = [body[p]["last_fragment_number"] for p in shapes.TF_PHASES]
        if max(numbers) >= 0:
            seen += "".join(body[p]["log_data"] for p in shapes.TF_PHASES)
            start = max(numbers) + 1
    assert seen == "booting\none\ntwo\nbye\n"


def test_log_query_is_checked_as_testflinger_does() -> None:
    assert shapes.parse_log_query({}) == (0, None, None, {})
    assert shapes.parse_log_query({"start_fragment": "4", "phase": "test"}) == (4, None, "test", {})
    _, since, _, problems = shapes.parse_log_query({"start_timestamp": "2026-01-01T00:00:00"})
    assert since == 1767225600.0 and not problems
    _, _, _, problems = shapes.parse_log_query({"start_fragment": "-1", "phase": "nope",
                                                "start_timestamp": "yesterday"})
    assert set(problems) == {"start_fragment", "phase", "start_timestamp"}
    assert shapes.parse_log_query({"start_fragment": "x"})[3] == {"start_fragment": ["Not a valid integer."]}


def test_agent_state_says_waiting_running_offline_or_maintenance() -> None:
    idle = shapes.agent_shape("d1", "idle", ("q",), "host1", "emulated", None, None)
    assert idle == {"name": "d1", "state": "waiting", "queues": ["q"], "location": "host1",
                    "provision_type": "emulated", "job_id": "", "comment": ""}
    assert shapes.agent_shape("d1", "busy", ["q"], "h", "c", "j1", "test")["state"] == "test"
    assert shapes.agent_shape("d1", "assigned", ["q"], "h", "c", "j1", None)["state"] == "provision"
    assert shapes.agent_shape("d1", "offline", ["q"], "h", "c", None, None)["state"] == "offline"
    down = shapes.agent_shape("d1", "maintenance", ["q"], "h", "c", None, None, "3 failures")
    assert down["state"] == "maintenance" and down["comment"] == "3 failures"


def test_position_counts_the_waiting_jobs_ahead_that_want_the_same_queue() -> None:
    line = [("a", ["q1"]), ("b", ["q2"]), ("c", ["q1", "q2"]), ("d", ["q1"]), ("e", ["device_type:x"])]
    assert shapes.jobs_ahead("a", line) == 0
    assert shapes.jobs_ahead("b", line) == 0  # a waits for another queue
    assert shapes.jobs_ahead("c", line) == 2
    assert shapes.jobs_ahead("d", line) == 2  # a and c, not b
    assert shapes.jobs_ahead("e", line) == 0
    assert shapes.jobs_ahead("gone", line) is None
