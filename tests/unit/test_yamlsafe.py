"""Safe YAML (and JSON) loading: nothing runs, nothing explodes, errors say where."""
from __future__ import annotations

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
    ("a: " + "1" * 5000 + "\n", "number too long (more than 4300 digits) at line 1, column 4"),
])
def test_rejected_by_convoys_rules(loader, text, expected):
    """convoy's own rules: its message, at the place in the document."""
    assert expected in message(text)


@pytest.mark.parametrize("text, line", [
    ("a: [1, 2\nb: 3\n", 2),
    ("a:\n  b: 1\n c: 2\n", 3),
    ("a: 'unterminated\n", 2),
    ("--- a\n--- b\n", 2),
    ("? [a, b]\n: c\n", 1),
])
def test_syntax_errors_say_where(loader, text, line):
    """The parser's own explanation follows; only convoy's part (what and where) is asserted."""
    assert message(text).startswith(f"invalid YAML at line {line}, column ")


@pytest.mark.parametrize("text", ["a: \x01\n", "a: \ud800\n", b"a: \xff\xfe\xfd\n"])
def test_text_that_is_not_yaml(loader, text):
    assert message(text).startswith("invalid YAML")


TOO_DEEP = [
    ("[" * 100_000, 1),                                         # deeper than libyaml's own limit (1000)
    ("[" * 500 + "]" * 500, 1),                                 # deeper than convoy's, within libyaml's
    ("{a: " * 3000 + "1" + "}" * 3000, 1),                      # flow mappings
    ("- " * 2000 + "a\n", 1),                                   # block sequences on one line
    ("".join(" " * i + "k:\n" for i in range(1100)) + " " * 1100 + "v\n", 65),  # block mappings
]


@pytest.mark.parametrize("text, line", TOO_DEEP, ids=["flow-100000", "flow-500", "mappings", "block-seq", "block-map"])
def test_too_deep_is_convoys_error_whatever_the_parser(loader, text, line):
    """Whichever parser meets the nesting first (libyaml has a limit of its own), the
    user gets convoy's limit and the line where the document became too deep."""
    found = message(text)
    assert found.startswith(f"document is nested too deeply (limit {yamlsafe.MAX_DEPTH} levels) at line {line}, ")
    assert message(text.encode()) == found


def test_exactly_the_depth_limit_is_fine(loader):
    """Nesting counts mappings and sequences; the scalar inside the deepest one is no level."""
    depth = yamlsafe.MAX_DEPTH
    innermost = load_yaml("[" * depth + "x" + "]" * depth)
    for _ in range(depth - 1):
        [innermost] = innermost
    assert innermost == ["x"]
    assert message("[" * (depth + 1) + "x" + "]" * (depth + 1)).startswith("document is nested too deeply")


def test_too_deep_after_a_syntax_error_is_a_syntax_error(loader):
    """The first problem in the text is the one reported."""
    text = "a: [1, 2\nb: 3\nc: " + "[" * 2000
    assert message(text).startswith("invalid YAML at line 2, column ")


def test_node_limit(loader, monkeypatch):
    if loader == "pure-python":  # ~10x slower: check the same code path on a smaller limit
        monkeypatch.setattr(yamlsafe, "MAX_NODES", 5_000)
    limit = yamlsafe.MAX_NODES
    # stops at the first value over the limit (its line says so); how fast is bench/'s business
    assert message("- a\n" * (limit + 10)) == (
        f"document has too many values (limit {limit}) at line {limit}, column 3")
    assert len(load_yaml("- a\n" * (limit - 1))) == limit - 1


def test_python_tag_does_not_run(loader, tmp_path: Path):
    marker = tmp_path / "ran"
    message(f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    assert not marker.exists()


@pytest.mark.parametrize("size", [MAX_BYTES + 1, 5 * 1024 * 1024])
def test_size_limit(size, monkeypatch):
    def never_parsed(text):
        raise AssertionError("a document over the size limit was parsed")

    monkeypatch.setattr(yamlsafe, "_parse", never_parsed)  # refused on its size alone, before any parsing
    text = "#" * size
    assert message(text) == f"document too large ({size} bytes, limit 1048576)"
    assert message(text.encode()) == f"document too large ({size} bytes, limit 1048576)"


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
    ('{"a": 1' + "0" * 5000 + "}", "number too long (more than 4300 digits)"),
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
