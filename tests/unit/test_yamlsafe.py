"""Safe YAML (and JSON) loading: nothing runs, nothing explodes, errors say where."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from convoy.config import yamlsafe
from convoy.config.yamlsafe import MAX_BYTES, load_json, load_yaml, read_document
from convoy.errors import JobValidationError


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request, monkeypatch):
    """Run each test with the libyaml loader and with the pure-Python fallback."""
    if request.param == "pure-python":
        monkeypatch.setattr(yamlsafe, "_CLoader", None)
    elif yamlsafe._CLoader is None:
        pytest.skip("PyYAML without libyaml")
    return request.param


def message(text, **kwargs) -> str:
    with pytest.raises(JobValidationError) as info:
        load_yaml(text, **kwargs)
    [error] = info.value.errors
    assert error.path == ""
    return error.message


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


@pytest.mark.parametrize("text, expected", [
    ("job_queue: rpi4b\ncount: 2\n", {"job_queue": "rpi4b", "count": 2}),
    (b"job_queue: rpi4b\n", {"job_queue": "rpi4b"}),
    ("a: 2024-01-01\nb: 2024-01-01T10:00:00Z\n", {"a": "2024-01-01", "b": "2024-01-01T10:00:00Z"}),
    ("a: &x 1\nb: 2\n", {"a": 1, "b": 2}),
    ("<<: {a: 1}\nb: 2\n", {"a": 1, "b": 2}),
    ("", None),
    ("# only a comment\n", None),
    ("- 1\n- x\n", [1, "x"]),
])
def test_plain_documents(loader, text, expected):
    assert load_yaml(text) == expected


@pytest.mark.parametrize("text, expected", [
    (BILLION_LAUGHS, "YAML aliases/anchors are not allowed (found *a) at line 2, column 8"),
    ("a: &a [*a]\n", "YAML aliases/anchors are not allowed (found *a) at line 1, column 8"),
    ("x: !!python/object/apply:os.system ['true']\n",
     "unsupported YAML tag '!!python/object/apply:os.system' (convoy reads plain YAML only) at line 1, column 4"),
    ("x: !!python/name:os.system\n", "unsupported YAML tag '!!python/name:os.system'"),
    ("x: !custom 3\n", "unsupported YAML tag '!custom'"),
    ("x: !!binary aGVsbG8=\n", "unsupported YAML tag '!!binary'"),
    ("x: !!set {a, b}\n", "unsupported YAML tag '!!set'"),
    ("x: !!omap [a: 1]\n", "unsupported YAML tag '!!omap'"),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3, column 1"),
    ("a: [1, 2\nb: 3\n", "invalid YAML at line 2, column 2:"),
    ("a:\n  b: 1\n c: 2\n", "invalid YAML at line 3, column 2:"),
    ("a: 'unterminated\n", "invalid YAML at line 2, column 1: found unexpected end of stream"),
    ("--- a\n--- b\n", "invalid YAML at line 2, column 1: found another document"),
    ("? [a, b]\n: c\n", "invalid YAML at line 1, column 3: found unhashable key"),
    ("[" * 100_000, "document is nested too deeply (limit 64 levels) at line 1, column 65"),
    ("a: \x01\n", "invalid YAML: unacceptable character #x0001"),
    ("a: \ud800\n", "invalid YAML"),
    (b"a: \xff\xfe\xfd\n", "invalid YAML: unacceptable character"),
])
def test_rejected_documents(loader, text, expected):
    start = time.monotonic()
    assert expected in message(text)
    assert time.monotonic() - start < 5


def test_node_limit(loader, monkeypatch):
    if loader == "pure-python":  # ~10x slower: check the same code path on a smaller limit
        monkeypatch.setattr(yamlsafe, "MAX_NODES", 5_000)
    limit = yamlsafe.MAX_NODES
    start = time.monotonic()
    assert message("- a\n" * (limit + 10)) == (
        f"document has too many values (limit {limit}) at line {limit}, column 3")
    assert time.monotonic() - start < 2
    assert len(load_yaml("- a\n" * (limit - 1))) == limit - 1


def test_python_tag_does_not_run(loader, tmp_path: Path):
    marker = tmp_path / "ran"
    message(f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    assert not marker.exists()


@pytest.mark.parametrize("size", [MAX_BYTES + 1, 5 * 1024 * 1024])
def test_size_limit(size):
    text = "#" * size
    start = time.monotonic()
    assert message(text) == f"document too large ({size} bytes, limit 1048576)"
    assert message(text.encode()) == f"document too large ({size} bytes, limit 1048576)"
    assert time.monotonic() - start < 1


def test_size_counts_bytes_not_characters():
    text = "#" + "é" * (MAX_BYTES // 2)  # 2 bytes each in UTF-8
    assert message(text) == f"document too large ({MAX_BYTES + 1} bytes, limit 1048576)"


def test_exactly_the_limit_is_fine():
    assert load_yaml("#" * MAX_BYTES) is None


def test_source_names_the_file():
    assert message("a: [", source="job.yaml").startswith("job.yaml: invalid YAML at line 2, column 1")


def test_not_text():
    assert message(42) == "expected YAML text, got int"  # type: ignore[arg-type]


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ('{"a": NaN}', "NaN is not allowed in JSON"),
    ('{"a": 1', "invalid JSON at line 1, column 8"),
    ("[" * 100_000, "document is nested too deeply"),
    ("[" * 70 + "]" * 70, "document is nested too deeply (limit 64 levels)"),
    (b'{"a": "\xff"}', "invalid JSON"),
])
def test_json_rejected(text, expected):
    with pytest.raises(JobValidationError) as info:
        load_json(text)
    assert expected in info.value.errors[0].message


def test_json_ok():
    assert load_json('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


def test_read_document(tmp_path: Path):
    yml = tmp_path / "job.yml"
    yml.write_text("job_queue: a\n")
    assert read_document(yml) == read_document(str(yml)) == {"job_queue": "a"}
    assert read_document({"x": 1}) == {"x": 1}
    assert read_document("job_queue: b") == {"job_queue": "b"}
    txt = tmp_path / "job.txt"  # not a job-file suffix: a str is YAML text
    txt.write_text("job_queue: c\n")
    assert read_document(str(txt)) == str(txt)
    assert read_document(txt) == {"job_queue": "c"}  # a Path is always a file
    with pytest.raises(JobValidationError, match="file not found"):
        read_document(str(tmp_path / "nope.yaml"))
    with pytest.raises(JobValidationError, match="file not found"):
        read_document(tmp_path / "nope.yaml")
