"""LAVA-style test results, pure parts: case validation, the outcome rules, JUnit rendering."""
from __future__ import annotations

import pytest
from junitparser import Error, Failure, JUnitXml, Properties, Skipped

from convoy.config.testresults import (
    MAX_NAME,
    MAX_UNITS,
    TestCaseError,
    junit_xml,
    normalize_case,
    suites,
    test_phase_failed,
    test_phase_failure,
    write_junit,
)


def case(**fields):
    return {"suite": "0_smoke-tests", "case": "linux-posix-pwd", "result": "pass", **fields}


def test_a_case_is_stored_with_its_measurement_as_text_and_without_empty_fields():
    out = normalize_case(case(measurement=3.5, units="s", set=None, reference="https://x/1", started=1.0))
    assert out == {"suite": "0_smoke-tests", "case": "linux-posix-pwd", "result": "pass",
                   "measurement": "3.5", "units": "s", "reference": "https://x/1", "started": 1.0}


@pytest.mark.parametrize("result", ["pass", "fail", "skip", "unknown"])
def test_every_lava_result_word_is_accepted(result):
    assert normalize_case(case(result=result))["result"] == result


@pytest.mark.parametrize("fields, field, words", [
    ({"result": "PASSED"}, "result", "not one of pass, fail, skip, unknown"),
    ({"result": None}, "result", "missing"),
    ({"case": ""}, "case", "missing"),
    ({"measurement": "12ms"}, "measurement", "not a number"),
    ({"measurement": "nan"}, "measurement", "finite"),
    ({"measurement": True}, "measurement", "number"),
    ({"suite": "s" * (MAX_NAME + 1)}, "suite", f"at most {MAX_NAME}"),
    ({"case": "a" * (MAX_NAME + 1)}, "case", f"at most {MAX_NAME}"),
    ({"units": "u" * (MAX_UNITS + 1)}, "units", f"at most {MAX_UNITS}"),
    ({"case": "two\nlines"}, "case", "control character"),
    ({"set": 3}, "set", "must be text"),
    ({"started": "yesterday"}, "started", "epoch seconds"),
    ({"reslut": "pass"}, "reslut", "unknown field"),
])
def test_a_wrong_case_is_refused_naming_the_field(fields, field, words):
    with pytest.raises(TestCaseError) as caught:
        normalize_case(case(**fields))
    assert caught.value.field == field
    assert words in str(caught.value) and f"test case {field}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- LAVA's outcome rules ---------------------------------------------------
FAILED_CASE = {"suite": "0_smoke-tests", "case": "a", "result": "fail"}
LAVA_FAIL = {"suite": "lava", "case": "multinode-wait-ready", "result": "fail", "detail": "timed out"}


@pytest.mark.parametrize("cases, raised, timed_out, status, failed, why", [
    ([], False, False, 0, False, ""),
    ([FAILED_CASE], False, False, 0, False, ""),  # a failed test case does not fail the job
    ([FAILED_CASE], False, False, 1, False, ""),  # nor does a definition's own exit status
    ([], True, False, 0, True, "lava-test-raise"),
    ([], False, True, 0, True, "timed out"),
    ([], False, False, None, True, "device was lost"),
    ([], False, False, 255, True, "device was lost"),  # ssh: the connection failed
    ([LAVA_FAIL], False, False, 0, True, "lava multinode-wait-ready failed: timed out"),
])
def test_the_test_phase_fails_by_lavas_rules(cases, raised, timed_out, status, failed, why):
    kwargs = {"raised": raised, "timed_out": timed_out, "shell_status": status}
    assert test_phase_failed(cases, **kwargs) is failed
    assert why in test_phase_failure(cases, **kwargs) and bool(test_phase_failure(cases, **kwargs)) is failed


# --- suites -----------------------------------------------------------------
def test_suites_keep_the_order_of_first_appearance_with_the_lava_suite_last():
    recorded = [case(suite="0_a", case="one"), case(suite="lava", case="0_a", result="fail"),
                case(suite="1_b", case="two"), case(suite="0_a", case="three")]
    calls = [{"job_id": "j", "role": "server", "name": "multinode-send-ready", "result": "pass", "time": 5.0},
             {"job_id": "j", "name": "multinode-wait-done", "result": "fail", "detail": "timed out", "time": 6.0}]
    out = suites(recorded, calls)
    assert [s["name"] for s in out] == ["0_a", "1_b", "lava"]
    assert [c["case"] for c in out[0]["cases"]] == ["one", "three"]
    assert out[2]["cases"] == [
        {"case": "0_a", "result": "fail"},
        {"case": "multinode-send-ready", "result": "pass", "ended": 5.0},
        {"case": "multinode-wait-done", "result": "fail", "detail": "timed out", "ended": 6.0}]
    assert suites([]) == []


# --- JUnit ------------------------------------------------------------------
def lava_results():
    """A MultiNode job's results as job_results gives them: a parent and two children of one role."""
    cases = [{"case": "pass-case", "result": "pass", "measurement": "3.5", "units": "s",
              "started": 10.0, "ended": 12.5, "set": "net", "reference": "https://ci/1"},
             {"case": "fail-case", "result": "fail"},
             {"case": "skip-case", "result": "skip"},
             {"case": "unknown-case", "result": "unknown", "measurement": "0"}]
    return {
        "job_id": "parent", "job_state": "complete", "outcome": "pass", "job_queue": "multi",
        "provision_status": 0, "provision_output": "", "test_status": 0, "test_output": "",
        "test_results": [],
        "children": [
            {"job_id": "c1", "role": "server", "test_status": 0,
             "test_results": [{"name": "0_iperf", "cases": cases},
                              {"name": "lava", "cases": [{"case": "multinode-send-ready", "result": "pass"}]}]},
            {"job_id": "c2", "role": "client", "test_status": 0, "test_results": []},
            {"job_id": "c3", "role": "client", "provision_status": 0, "test_status": 143, "test_results": []},
        ],
    }


def read_back(xml_text: str):
    return JUnitXml.fromstring(xml_text.encode())


def test_junit_has_a_suite_per_job_and_suite_and_a_case_per_case():
    xml = read_back(junit_xml(lava_results()))
    by_name = {s.name: s for s in xml}
    assert list(by_name) == ["parent/phases", "server/0_iperf", "server/lava", "client.c2/phases", "client.c3/phases"]
    iperf = {c.name: c for c in by_name["server/0_iperf"]}
    assert [c.classname for c in iperf.values()] == ["0_iperf"] * 4
    assert iperf["pass-case"].is_passed and iperf["pass-case"].time == 2.5
    assert "measurement: 3.5 s" in iperf["pass-case"].system_out
    assert "set: net" in iperf["pass-case"].system_out and "reference: https://ci/1" in iperf["pass-case"].system_out
    props = {p.name: p.value for p in iperf["pass-case"].child(Properties)}
    assert props == {"measurement": "3.5", "units": "s"}
    assert isinstance(iperf["fail-case"].result[0], Failure)
    assert isinstance(iperf["skip-case"].result[0], Skipped)
    assert isinstance(iperf["unknown-case"].result[0], Error) and iperf["unknown-case"].result[0].type == "unknown"
    suite = by_name["server/0_iperf"]
    assert (suite.tests, suite.failures, suite.skipped, suite.errors) == (4, 1, 1, 1)
    assert (xml.tests, xml.failures) == (4 + 1 + 2 + 1 + 2, 1 + 1)


def test_a_job_without_cases_gets_a_testcase_per_phase_failed_when_its_status_is_not_zero():
    results = {"job_id": "j1", "provision_status": 0, "provision_output": "ok",
               "test_status": 2, "test_output": "line\n\x1b[31mboom\x1b[0m\n", "test_results": []}
    (suite,) = read_back(junit_xml(results))
    assert suite.name == "j1/phases"
    cases = {c.name: c for c in suite}
    assert cases["provision"].is_passed
    (failure,) = cases["test"].result
    assert failure.message == "test exited 2" and "boom" in failure.text


def test_a_job_with_cases_lists_only_its_failed_phases():
    results = {"job_id": "j1", "test_status": 1, "cleanup_status": 0,
               "test_results": [{"name": "lava", "cases": [{"case": "0_x", "result": "fail", "detail": "raised"}]}]}
    suites_ = {s.name: s for s in read_back(junit_xml(results))}
    assert [c.name for c in suites_["j1/phases"]] == ["test"]
    (failure,) = next(iter(suites_["j1/lava"])).result
    assert failure.message == "raised"


def test_write_junit_writes_a_file_junitparser_reads(tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(lava_results(), str(path))
    assert path.read_text().startswith("<?xml")
    assert JUnitXml.fromfile(str(path)).tests == 10
