"""Safe loading of user documents (job and agent files, YAML or JSON).

Jobs come from users and travel as JSON, so the loader refuses what could run
code (``!!python/...`` tags), blow up memory (alias bombs, huge or deeply
nested documents) or not survive JSON (binary, sets); it keeps timestamps as
the strings the user wrote.  Every failure is a
:class:`~convoy.errors.JobValidationError` whose message says where.

Real LAVA job files rely on two things PyYAML's loader (hence LAVA's) accepts,
so convoy accepts them too:

* duplicate keys in a mapping: the last one wins, and a warning names the key
  and both lines (:func:`load_yaml_with_warnings` returns the warnings);
* anchors, aliases and merge keys (``<<: *base``), as PyYAML's SafeLoader.
  The rule that keeps them safe: the document is measured as if every alias
  were copied in place -- at most :data:`MAX_NODES` values and
  :data:`MAX_DEPTH` levels of nesting *after expansion* -- and an alias inside
  the collection its anchor names (a cycle) is refused.  Both are checked on
  the event stream before anything is built, and errors name the alias's line,
  so a "billion laughs" bomb costs no more than reading its text.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from convoy.errors import FieldError, JobValidationError

__all__ = [
    "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "load_json", "load_yaml", "load_yaml_with_warnings", "read_document",
    "read_document_with_warnings",
]

#: largest document accepted, in bytes
MAX_BYTES = 1024 * 1024
#: deepest nesting of mappings and sequences accepted
MAX_DEPTH = 64
#: most YAML nodes (scalars, mappings, sequences) in one document, aliases counted as copies
MAX_NODES = 100_000

_DOC_SUFFIXES = (".yaml", ".yml", ".json")
_YAML_TAG = "tag:yaml.org,2002:"


class _Reject(Exception):
    """Raised inside the loader; turned into a JobValidationError by the caller."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _fail(message: str) -> JobValidationError:
    return JobValidationError([FieldError("", message)])


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML_TAG):] if tag.startswith(_YAML_TAG) else tag


class _StrictConstruction:
    """Constructors shared by both loaders: duplicate keys warned about, no exotic tags, dates as text."""

    #: (line, column, warning) found while constructing (set by :func:`_parse` before loading)
    duplicate_warnings: list[tuple[int, int, str]]

    def flatten_mapping(self, node: Any) -> None:
        """Note duplicate keys before PyYAML merges ``<<`` keys in (it keeps the last of each key)."""
        if not getattr(node, "_convoy_checked", False):
            node._convoy_checked = True  # a node merged into others is flattened again: warn once
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_TAG + "merge":
                    continue  # non-scalar keys are refused by PyYAML; merged keys may be overridden
                key = (key_node.tag, self.construct_object(key_node))  # type: ignore[attr-defined]
                if key in first:
                    line = key_node.start_mark.line + 1
                    self.duplicate_warnings.append((line, key_node.start_mark.column, (
                        f"line {line}: duplicate key {key_node.value!r} "
                        f"(first at line {first[key].start_mark.line + 1}); the last one is used, as LAVA does")))
                else:
                    first[key] = key_node
        super().flatten_mapping(node)  # type: ignore[misc]

    def construct_unsupported(self, node: Any) -> Any:
        raise _Reject(f"unsupported YAML tag {_short_tag(node.tag)!r} (convoy reads plain YAML only)", node.start_mark)

    def construct_timestamp_as_text(self, node: Any) -> str:
        return self.construct_scalar(node)  # type: ignore[attr-defined]

    def construct_bounded_int(self, node: Any) -> int:
        try:
            return super().construct_yaml_int(node)  # type: ignore[misc]
        except ValueError:  # Python refuses to convert integers of more than 4300 digits
            raise _Reject(_LONG_NUMBER_MESSAGE, node.start_mark) from None

    @classmethod
    def _register(cls) -> None:
        cls.add_constructor(None, cls.construct_unsupported)  # type: ignore[attr-defined]
        cls.add_constructor(_YAML_TAG + "timestamp", cls.construct_timestamp_as_text)  # type: ignore[attr-defined]
        cls.add_constructor(_YAML_TAG + "int", cls.construct_bounded_int)  # type: ignore[attr-defined]
        for tag in ("binary", "set", "omap", "pairs"):
            cls.add_constructor(_YAML_TAG + tag, cls.construct_unsupported)  # type: ignore[attr-defined]


class _Budget:
    """Measures a document from its events as if every alias were copied in place.

    Each value counts once, an alias as many values as the anchored one holds;
    nesting counts open collections plus, at an alias, the anchored one's own.
    An alias to a collection still open (its own container) is a cycle.
    """

    def __init__(self) -> None:
        self.values = 0
        self.aliases = 0
        #: open collections: [anchor, values so far, deepest nesting inside]
        self.stack: list[list[Any]] = []
        #: closed anchors: (values, nesting)
        self.anchors: dict[str, tuple[int, int]] = {}

    def feed(self, event: Any) -> None:
        if isinstance(event, yaml.AliasEvent):
            self._alias(event)
        elif isinstance(event, yaml.ScalarEvent):
            self._add(1, 0, event)
            if event.anchor is not None:
                self.anchors[event.anchor] = (1, 0)
        elif isinstance(event, yaml.CollectionStartEvent):
            self._count(1, event)
            if len(self.stack) + 1 > MAX_DEPTH:
                raise _Reject(_DEPTH_MESSAGE.format(MAX_DEPTH), event.start_mark)
            self.stack.append([event.anchor, 1, 0])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size, inner = self.stack.pop()
            if anchor is not None:
                self.anchors[anchor] = (size, inner + 1)
            self._nest(size, inner + 1)
        elif isinstance(event, yaml.DocumentStartEvent):
            self.anchors.clear()  # anchors never reach across documents

    def _alias(self, event: Any) -> None:
        self.aliases += 1
        name = event.anchor
        if any(frame[0] == name for frame in self.stack):
            raise _Reject(_CYCLE_MESSAGE.format(name), event.start_mark)
        size, depth = self.anchors.get(name, (1, 0))  # an undefined alias: the composer says so
        if len(self.stack) + depth > MAX_DEPTH:
            raise _Reject(_ALIAS_DEPTH_MESSAGE.format(MAX_DEPTH, name), event.start_mark)
        if self.values + size > MAX_NODES:
            raise _Reject(_ALIAS_NODES_MESSAGE.format(MAX_NODES, name), event.start_mark)
        self._add(size, depth, event)

    def _count(self, size: int, event: Any) -> None:
        self.values += size
        if self.values > MAX_NODES:
            raise _Reject(_NODES_MESSAGE.format(MAX_NODES), event.start_mark)

    def _add(self, size: int, depth: int, event: Any) -> None:
        self._count(size, event)
        self._nest(size, depth)

    def _nest(self, size: int, depth: int) -> None:
        if self.stack:
            frame = self.stack[-1]
            frame[1] += size
            frame[2] = max(frame[2], depth)


class _PyLoader(_StrictConstruction, yaml.SafeLoader):
    """Pure-Python loader (when libyaml is missing): limits enforced on each event as it is composed."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.budget = _Budget()

    def get_event(self) -> Any:
        event = super().get_event()
        self.budget.feed(event)
        return event


_CYCLE_MESSAGE = "recursive alias *{0}: it refers to the collection &{0} that contains it"
_NODES_MESSAGE = "document has too many values (limit {})"
_ALIAS_NODES_MESSAGE = "document has too many values (limit {}) once alias *{} is expanded"
_DEPTH_MESSAGE = "document is nested too deeply (limit {} levels)"
_ALIAS_DEPTH_MESSAGE = "document is nested too deeply (limit {} levels) once alias *{} is expanded"
_LONG_NUMBER_MESSAGE = "number too long (more than 4300 digits)"
_PyLoader._register()

if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(_StrictConstruction, yaml.CSafeLoader):  # type: ignore[name-defined,misc]
        """libyaml loader: ~8x faster; limits are checked on the event stream first."""

    _CLoader._register()
else:  # pragma: no cover - libyaml ships with PyYAML's wheels
    _CLoader = None  # type: ignore[assignment,misc]


def _scan_events(text: str | bytes, loader: type) -> _Budget:
    """Refuse cycles, deep nesting and too many values (aliases expanded) before anything is built.

    libyaml's composer recurses in C, so nesting must be refused before it runs.
    """
    budget = _Budget()
    for event in yaml.parse(text, Loader=loader):
        budget.feed(event)
    return budget


def _explain_libyaml_error(text: str | bytes, mark: Any) -> None:
    """Raise convoy's own _Reject if the text up to libyaml's error breaks one of convoy's limits.

    libyaml has its own nesting limit, and its scanner reads far ahead in flow
    collections, so a deeply nested document can fail inside libyaml before
    the event scan sees depth 65.  The pure-Python parser, run on the text up
    to libyaml's error, tells whether the document was too deep (or too big)
    first: the user then gets convoy's message whatever libyaml's wording.
    Errors of the pure-Python parser itself are not reported: libyaml's are.
    """
    if mark is None:
        return
    end = mark.index + 1
    prefix = text[:end] if isinstance(text, str) else text[:4 * (end + 2)]  # a character is at most 4 bytes
    try:
        _scan_events(prefix, yaml.SafeLoader)
    except yaml.YAMLError:
        return


def _parse(text: str | bytes) -> tuple[Any, list[str]]:
    if _CLoader is None:
        loader: Any = _PyLoader(text)
        budget = loader.budget  # fed while composing
    else:
        try:
            budget = _scan_events(text, _CLoader)
        except yaml.MarkedYAMLError as exc:
            _explain_libyaml_error(text, exc.problem_mark or exc.context_mark)
            raise
        loader = _CLoader(text)
    loader.duplicate_warnings = []
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    if budget.aliases:  # PyYAML shares one object between an anchor and its aliases: give each place its own
        data = _unshared(data)
    return data, [warning for _, _, warning in sorted(loader.duplicate_warnings)]  # in the document's order


def _unshared(value: Any) -> Any:
    """A copy in which no dict or list appears twice (bounded: the budget counted every copy)."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


def _check_size(size: int, source: str) -> None:
    if size > MAX_BYTES:
        where = "" if source == "<string>" else f"{source}: "
        raise _fail(f"{where}document too large ({size} bytes, limit {MAX_BYTES})")


def _text_size(text: str | bytes) -> int:
    if isinstance(text, bytes):
        return len(text)
    if len(text) > MAX_BYTES:  # a char is at least one byte: no need to encode
        return len(text)
    return len(text.encode("utf-8", errors="surrogatepass"))


def load_yaml(text: str | bytes, *, source: str = "<string>") -> Any:
    """Parse one YAML document safely; raise JobValidationError saying what and where.

    Warnings (duplicate keys) are dropped: callers that show them use :func:`load_yaml_with_warnings`.
    """
    return load_yaml_with_warnings(text, source=source)[0]


def load_yaml_with_warnings(text: str | bytes, *, source: str = "<string>") -> tuple[Any, list[str]]:
    """Parse one YAML document safely; return it with the warnings a user should see.

    Each warning names the source (unless it is ``<string>``) and the lines, e.g.
    ``job.yaml: line 12: duplicate key 'timeout' (first at line 9); the last one is used, as LAVA does``.
    Raise JobValidationError saying what and where for anything refused.
    """
    if not isinstance(text, (str, bytes)):
        raise _fail(f"expected YAML text, got {type(text).__name__}")
    _check_size(_text_size(text), source)
    prefix = "" if source == "<string>" else f"{source}: "
    try:
        data, warnings = _parse(text)
        return data, [prefix + warning for warning in warnings]
    except _Reject as exc:
        raise _fail(f"{prefix}{exc.message} at {_where(exc.mark)}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or exc.context or "invalid YAML").removeprefix("but ")
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        raise _fail(f"{prefix}invalid YAML at {_where(mark)}: {problem}{context}") from None
    except yaml.YAMLError as exc:  # reader errors: bad encoding, control characters
        raise _fail(f"{prefix}invalid YAML: {' '.join(str(exc).split())}") from None
    except UnicodeError as exc:
        raise _fail(f"{prefix}invalid YAML: not valid Unicode text ({exc.reason})") from None
    except RecursionError:  # guarded by MAX_DEPTH; kept so no input can crash the caller
        raise _fail(f"{prefix}document is nested too deeply") from None


def load_json(text: str | bytes, *, source: str = "<string>") -> Any:
    """Parse a JSON document with the same limits as YAML (size, depth, duplicate keys)."""
    _check_size(_text_size(text), source)
    prefix = "" if source == "<string>" else f"{source}: "

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise _Reject(f"duplicate key {key!r}")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise _Reject(f"{name} is not allowed in JSON")

    def integer(digits: str) -> int:
        try:
            return int(digits)
        except ValueError:  # Python refuses to convert integers of more than 4300 digits
            raise _Reject(_LONG_NUMBER_MESSAGE) from None

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_int=integer)
    except _Reject as exc:
        raise _fail(f"{prefix}{exc.message}") from None
    except json.JSONDecodeError as exc:
        raise _fail(f"{prefix}invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise _fail(f"{prefix}invalid JSON: not UTF-8 ({exc.reason})") from None
    except RecursionError:
        raise _fail(f"{prefix}document is nested too deeply") from None
    if _depth(data) > MAX_DEPTH:
        raise _fail(f"{prefix}document is nested too deeply (limit {MAX_DEPTH} levels)")
    return data


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = [i for i in nxt if isinstance(i, (dict, list))]
        if depth > MAX_DEPTH:
            break
    return depth


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and text.strip().lower().endswith(_DOC_SUFFIXES)


def _read_file(path: Path) -> tuple[Any, list[str]]:
    name = str(path)
    try:
        size = path.stat().st_size
        _check_size(size, name)  # before reading: a huge file fails at once
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise _fail(f"file not found: {name}") from None
    except IsADirectoryError:
        raise _fail(f"not a file: {name}") from None
    except OSError as exc:
        raise _fail(f"cannot read {name}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in the name
        raise _fail(f"cannot read {name!r}: {exc}") from None
    if path.suffix.lower() == ".json":
        return load_json(data, source=name), []
    return load_yaml_with_warnings(data, source=name)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # too long, NUL bytes, ...
        return False


def read_document(source: Any) -> Any:
    """Load ``source``: a dict (returned as is), a path, or YAML text.

    A ``str`` naming an existing ``.yaml``/``.yml``/``.json`` file, or any
    ``os.PathLike``, is read as a file; any other ``str`` (or ``bytes``) is
    YAML text -- except that a one-line text ending in one of those suffixes
    that parses to just itself is reported as a missing file, since that is
    what the user meant.  Warnings are dropped (see :func:`read_document_with_warnings`).
    """
    return read_document_with_warnings(source)[0]


def read_document_with_warnings(source: Any) -> tuple[Any, list[str]]:
    """:func:`read_document`, with the warnings to show the user (duplicate keys, naming their lines)."""
    if isinstance(source, dict):
        return source, []
    if isinstance(source, os.PathLike):
        return _read_file(Path(source))
    if isinstance(source, str):
        stripped = source.strip()
        if _looks_like_path(source) and _is_file(stripped):
            return _read_file(Path(stripped))
        data, warnings = load_yaml_with_warnings(source)
        if _looks_like_path(source) and data == stripped:
            raise _fail(f"file not found: {stripped}")
        return data, warnings
    if isinstance(source, bytes):
        return load_yaml_with_warnings(source)
    return source, []  # validators report "must be a mapping, got ..."
