"""Job secrets: validated like env, kept out of the recorded document, masked in output chunk by chunk."""
from __future__ import annotations

import pytest

from convoy.config.jobs import validate_job
from convoy.coordinator.state.jobs import split_secrets, with_secret_values
from convoy.coordinator.state.secrets import mask, mask_chunk, mask_rest
from convoy.errors import JobValidationError

S = "s3cr3t-value"


@pytest.mark.parametrize(("text", "secrets", "shown"), [
    ("token=s3cr3t-value!", [S], "token=***!"),
    ("a s3cr3t-value b s3cr3t-value", [S], "a *** b ***"),
    ("nothing here", [S], "nothing here"),
    ("long-s3cr3t-value-x", [S, "long-s3cr3t-value-x"], "***"),   # the longer secret wins
    ("x", ["", S], "x"),                                        # an empty value masks nothing
])
def test_mask(text: str, secrets: list[str], shown: str):
    assert mask(text, secrets) == shown


@pytest.mark.parametrize("chunks", [
    ["token=s3cr3t-value\n"],
    ["token=s3c", "r3t-value\n"],
    ["token=s", "3", "cr3t-val", "ue\n"],
    ["token=s3cr3t-valu", "e\n"],
    ["token=s3cr3t-value", "\n"],
])
def test_a_secret_cut_across_chunks_is_masked_and_nothing_else_changes(chunks: list[str]):
    held, written = "", []
    for chunk in chunks:
        now, held = mask_chunk(held, chunk, [S])
        written.append(now)
    written.append(mask_rest(held, [S]))
    assert "".join(written) == "token=***\n"
    assert S[:4] not in "".join(written)


def test_a_held_start_that_is_not_a_secret_after_all_is_written_unchanged():
    now, held = mask_chunk("", "value s3c", [S])
    assert (now, held) == ("value ", "s3c")
    now, held = mask_chunk(held, "ond line\n", [S])
    assert (now, held) == ("s3cond line\n", "")


@pytest.mark.parametrize(("doc", "secrets", "error"), [
    ({"job_queue": "q", "test_data": {"secrets": {"API_TOKEN": "x", "N": 5}}}, {"API_TOKEN": "x", "N": "5"}, None),
    ({"job_queue": "q", "test_data": {"secrets": {"bad name": "x"}}}, None, "test_data.secrets.bad name"),
    ({"job_queue": "q", "test_data": {"secrets": {"E": ""}}}, None, "test_data.secrets.E"),
    ({"job_queue": "q", "test_data": {"secrets": ["A=b"]}}, None, "test_data.secrets"),
    ({"job_queue": "q", "test_data": {"secrets": {"T": "ab\0SECRETPART"}}}, None, "test_data.secrets.T"),
    ({"job_queue": "q", "test_data": {"secrets": {"T": ["SECRETPART"]}}}, None, "test_data.secrets.T"),
])
def test_secrets_are_validated_like_env(doc: dict, secrets: dict | None, error: str | None):
    if error:
        with pytest.raises(JobValidationError) as caught:
            validate_job(doc)
        assert error in str(caught.value) and "SECRETPART" not in str(caught.value)  # no value in errors
    else:
        assert validate_job(doc)["test_data"]["secrets"] == secrets


def test_lava_secrets_become_every_role_s_test_data_secrets():
    definition = {"from": "inline", "name": "t", "path": "inline/t.yaml",
                  "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": "t"},
                                 "run": {"steps": ["echo $TOKEN"]}}}
    single = {"job_name": "x", "device_type": "qemu", "secrets": {"TOKEN": "abc"},
              "actions": [{"test": {"definitions": [definition]}}]}
    assert validate_job(single)["test_data"]["secrets"] == {"TOKEN": "abc"}
    with pytest.raises(JobValidationError, match="secrets"):
        validate_job({**single, "secrets": ["TOKEN"]})


def test_the_recorded_document_names_secrets_and_the_running_one_has_their_values():
    doc = {"job_queue": "q", "test_data": {"env": {"A": "1"}, "secrets": {"TOKEN": S}}}
    public, secrets = split_secrets(doc)
    assert public["test_data"]["secrets"] == {"TOKEN": "***"} and S not in str(public)
    assert secrets == {"TOKEN": S} and doc["test_data"]["secrets"] == {"TOKEN": S}  # the caller's is unchanged
    running = with_secret_values(public, secrets)
    assert running["test_data"]["env"] == {"A": "1", "TOKEN": S}
    assert public["test_data"]["secrets"] == {"TOKEN": "***"}
    assert split_secrets({"job_queue": "q"}) == ({"job_queue": "q"}, {})
