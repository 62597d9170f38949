"""Safe YAML (and JSON) loading: nothing runs, nothing explodes, errors say where."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convoy.config import yamlsafe
from convoy.config.yamlsafe import (
    MAX_BYTES,
    load_json,
    load_yaml,
    load_yaml_with_warnings,
    read_document,
    read_document_with_warnings,
)
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
RECURSIVE = "recursive alias *a: it refers to the collection &a that contains it"


@pytest.mark.parametrize("text, expected", [
    ("job_queue: rpi4b\ncount: 2\n", {"job_queue": "rpi4b", "count": 2}),
    (b"job_queue: rpi4b\n", {"job_queue": "rpi4b"}),
    ("a: 2024-01-01\nb: 2024-01-01T10:00:00Z\n", {"a": "2024-01-01", "b": "2024-01-01T10:00:00Z"}),
    ("a: &x 1\nb: 2\n", {"a": 1, "b": 2}),
    ("<<: {a: 1}\nb: 2\n", {"a": 1, "b": 2}),
    ("a: &x [1, {k: v}]\nb: *x\n", {"a": [1, {"k": "v"}], "b": [1, {"k": "v"}]}),
    ("base: &b {t: 1, u: 2}\njob:\n  <<: *b\n  u: 3\n", {"base": {"t": 1, "u": 2}, "job": {"t": 1, "u": 3}}),
    ("a: &a {x: 1}\nb: &b {y: 2}\nc: {<<: [*a, *b], z: 3}\n",
     {"a": {"x": 1}, "b": {"y": 2}, "c": {"x": 1, "y": 2, "z": 3}}),
    ("", None),
    ("# only a comment\n", None),
    ("- 1\n- x\n", [1, "x"]),
])
def test_plain_documents(loader, text, expected):
    assert load_yaml(text) == expected


@pytest.mark.parametrize("text, expected", [
    (BILLION_LAUGHS, "document has too many values (limit 100000) once alias *e is expanded at line 6, column 8"),
    ("a: &a [*a]\n", f"{RECURSIVE} at line 1, column 8"),
    ("a: &a {b: {c: *a}}\n", f"{RECURSIVE} at line 1, column 15"),
    ("x: 1\na: &a\n  <<: *a\n", f"{RECURSIVE} at line 3, column 7"),  # a merge key too
    ("x: !!python/object/apply:os.system ['true']\n",
     "unsupported YAML tag '!!python/object/apply:os.system' (convoy reads plain YAML only) at line 1, column 4"),
    ("x: !!python/name:os.system\n", "unsupported YAML tag '!!python/name:os.system'"),
    ("x: !custom 3\n", "unsupported YAML tag '!custom'"),
    ("x: !!binary aGVsbG8=\n", "unsupported YAML tag '!!binary'"),
    ("x: !!set {a, b}\n", "unsupported YAML tag '!!set'"),
    ("x: !!omap [a: 1]\n", "unsupported YAML tag '!!omap'"),
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


# ------------------------------------------------ LAVA's loader rules: duplicate keys, anchors and aliases
def test_duplicate_key_last_one_wins_with_a_warning_naming_both_lines(loader):
    text = "job_queue: rpi4b\ntimeout: 5\nname: x\ntimeout: 9\n"
    doc, warnings = load_yaml_with_warnings(text, source="job.yaml")
    assert doc == {"job_queue": "rpi4b", "timeout": 9, "name": "x"}  # as PyYAML (so LAVA) reads it
    assert warnings == [
        "job.yaml: line 4: duplicate key 'timeout' (first at line 2); the last one is used, as LAVA does"]
    assert load_yaml(text) == doc  # the plain function still returns just the document


def test_duplicate_keys_nested_repeated_and_in_anchored_mappings(loader):
    text = ("a:\n  b: 1\n  b: 2\n  b: 3\n"          # lines 1-4: nested, three times
            "base: &base {t: 1, t: 2}\n"          # line 5: one warning, however often it is used
            "x: *base\ny: {<<: *base, t: 3}\n"    # a merged key overridden is no duplicate
            "1: one\n0x1: also one\n")            # the same key written two ways, as the dict sees it
    doc, warnings = load_yaml_with_warnings(text)
    assert doc == {"a": {"b": 3}, "base": {"t": 2}, "x": {"t": 2}, "y": {"t": 3}, 1: "also one"}
    assert [w.split(";")[0] for w in warnings] == [
        "line 3: duplicate key 'b' (first at line 2)",
        "line 4: duplicate key 'b' (first at line 2)",
        "line 5: duplicate key 't' (first at line 5)",
        "line 9: duplicate key '0x1' (first at line 8)",
    ]


def test_no_warnings_for_a_clean_document(loader):
    assert load_yaml_with_warnings("a: &x {b: 1}\nc: *x\n") == ({"a": {"b": 1}, "c": {"b": 1}}, [])


def test_read_document_with_warnings_names_the_file(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text("job_queue: a\njob_queue: b\n")
    warning = f"{path}: line 2: duplicate key 'job_queue' (first at line 1); the last one is used, as LAVA does"
    assert read_document_with_warnings(path) == ({"job_queue": "b"}, [warning])
    assert read_document_with_warnings(str(path)) == ({"job_queue": "b"}, [warning])
    assert read_document_with_warnings("a: 1\na: 2\n")[1] == [
        "line 2: duplicate key 'a' (first at line 1); the last one is used, as LAVA does"]
    assert read_document_with_warnings({"a": 1}) == ({"a": 1}, [])
    assert read_document(path) == {"job_queue": "b"}


def test_aliases_give_each_place_its_own_copy(loader):
    """PyYAML shares one object between an anchor and its aliases; a job edited in one place must not change
    another."""
    doc = load_yaml("a: &x {k: [1]}\nb: *x\nc: {<<: *x}\n")
    assert doc["a"] == doc["b"] == doc["c"] == {"k": [1]}
    assert doc["a"] is not doc["b"] and doc["a"]["k"] is not doc["b"]["k"] and doc["a"]["k"] is not doc["c"]["k"]


def test_aliases_count_as_copies_against_the_value_limit(loader, monkeypatch):
    monkeypatch.setattr(yamlsafe, "MAX_NODES", 100)
    base = "a: &a [" + ", ".join(["x"] * 9) + "]\n"  # 3 values (mapping, key, sequence) + 9 = 12
    fits = base + "".join(f"k{i}: *a\n" for i in range(8))  # + 8 x (key + 10) = 100
    assert len(load_yaml(fits)) == 9
    over = base + "".join(f"k{i}: *a\n" for i in range(7)) + "k7: [*a]\n"  # 12 + 7 x 11 + 2, then 10 more
    assert message(over) == "document has too many values (limit 100) once alias *a is expanded at line 9, column 6"


def test_aliases_count_against_the_depth_limit(loader):
    depth = yamlsafe.MAX_DEPTH
    anchored = "a: &a " + "[" * (depth - 2) + "x" + "]" * (depth - 2) + "\n"  # the mapping + depth-2 levels
    assert load_yaml(anchored + "b: *a\n")["b"]  # depth - 1 levels
    assert load_yaml(anchored + "b: [*a]\n")["b"]  # exactly the limit
    assert message(anchored + "b: [[*a]]\n") == (
        f"document is nested too deeply (limit {depth} levels) once alias *a is expanded at line 2, column 6")


def test_alias_bomb_is_refused_quickly_whatever_its_size(loader):
    """Sixty levels of nine (9^59 strings): refused at the alias where it passes the limit, never expanded."""
    lines = ['l0: &l0 ["lol"]'] + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 60)]
    found = message("\n".join(lines) + "\n")
    assert found.startswith("document has too many values (limit 100000) once alias *l4 is expanded at line 6, ")


def test_undefined_alias_and_duplicate_anchor_are_yaml_errors(loader):
    assert message("a: *nope\n").startswith("invalid YAML at line 1, column 4: found undefined alias")
    assert message("a: &x 1\nb: &x 2\nc: *x\n").startswith("invalid YAML at line 2, column 4: ")
    assert "found duplicate anchor" in message("a: &x 1\nb: &x 2\nc: *x\n")


YAML_PIECES = st.sampled_from([
    "a", "b", "1", "x y", "'q'", ": ", ", ", "- ", "\n", "  ", "[", "]", "{", "}", "&a ", "&b ", "*a", "*b",
    "<<: ", "? ", "#c", "---", "!!str ", "!!python/name:os.system ",
])


@given(st.lists(YAML_PIECES, max_size=40).map("".join))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hostile_yaml_never_crashes_and_reads_as_pyyaml_does(loader, text):
    """Anything is either refused with convoy's error or read exactly as PyYAML's SafeLoader reads it."""
    try:
        doc, _ = load_yaml_with_warnings(text)
    except JobValidationError as exc:
        assert exc.errors and exc.errors[0].message
        return
    assert doc == yaml.load(text, Loader=yaml.SafeLoader)
