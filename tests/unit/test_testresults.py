"""LAVA-style test results, pure parts: case validation, the outcome rules, JUnit rendering."""
from __future__ import annotations

import pytest

from convoy.config.testresults import MAX_NAME, MAX_UNITS, TestCaseError, normalize_case


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
