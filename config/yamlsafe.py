"""Safe loading of user documents (job and agent files, YAML or JSON).

Jobs come from users and travel as JSON, so the loader refuses what could run
code (``!!python/...`` tags), blow up memory (alias bombs, huge or deeply
nested documents) or not survive JSON (binary, sets); it keeps timestamps as
the strings the user wrote.  Every failure is a
:class:`~convoy.errors.JobValidationError` whose message says where.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from convoy.errors import FieldError, JobValidationError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "load_json", "load_yaml", "read_document"]

#: largest document accepted, in bytes
MAX_BYTES = 1024 * 1024
#: deepest nesting of mappings and sequences accepted
MAX_DEPTH = 64
#: most YAML nodes (scalars, mappings, sequences) in one document
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
    """Constructors shared by both loaders: no duplicate keys, no exotic tags, dates as text."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _YAML_TAG + "merge":
                    key = (key_node.tag, key_node.value)
                    if key in seen:
                        raise _Reject(f"duplicate key {key_node.value!r}", key_node.start_mark)
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]

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


class _PyLoader(_StrictConstruction, yaml.SafeLoader):
    """Pure-Python loader (when libyaml is missing): limits enforced while composing."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Reject(_ALIAS_MESSAGE.format(event.anchor), event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Reject(_NODES_MESSAGE.format(MAX_NODES), event.start_mark)
        collection = isinstance(event, yaml.CollectionStartEvent)  # nesting counts collections, as _scan_events
        self._depth += collection
        try:
            if self._depth > MAX_DEPTH:
                raise _Reject(_DEPTH_MESSAGE.format(MAX_DEPTH), event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= collection


_ALIAS_MESSAGE = "YAML aliases/anchors are not allowed (found *{})"
_NODES_MESSAGE = "document has too many values (limit {})"
_DEPTH_MESSAGE = "document is nested too deeply (limit {} levels)"
_LONG_NUMBER_MESSAGE = "number too long (more than 4300 digits)"
_PyLoader._register()

if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(_StrictConstruction, yaml.CSafeLoader):  # type: ignore[name-defined,misc]
        """libyaml loader: ~8x faster; limits are checked on the event stream first."""

    _CLoader._register()
else:  # pragma: no cover - libyaml ships with PyYAML's wheels
    _CLoader = None  # type: ignore[assignment,misc]


def _scan_events(text: str | bytes, loader: type) -> None:
    """Reject aliases, deep nesting and too many nodes before anything is built.

    libyaml's composer recurses in C, so nesting must be refused before it runs.
    """
    depth = nodes = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            raise _Reject(_ALIAS_MESSAGE.format(event.anchor), event.start_mark)
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise _Reject(_NODES_MESSAGE.format(MAX_NODES), event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Reject(_DEPTH_MESSAGE.format(MAX_DEPTH), event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


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


def _parse(text: str | bytes) -> Any:
    if _CLoader is None:
        loader: Any = _PyLoader(text)
    else:
        try:
            _scan_events(text, _CLoader)
        except yaml.MarkedYAMLError as exc:
            _explain_libyaml_error(text, exc.problem_mark or exc.context_mark)
            raise
        loader = _CLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


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
    """Parse one YAML document safely; raise JobValidationError saying what and where."""
    if not isinstance(text, (str, bytes)):
        raise _fail(f"expected YAML text, got {type(text).__name__}")
    _check_size(_text_size(text), source)
    prefix = "" if source == "<string>" else f"{source}: "
    try:
        return _parse(text)
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


def _read_file(path: Path) -> Any:
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
        return load_json(data, source=name)
    return load_yaml(data, source=name)


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
    what the user meant.
    """
    if isinstance(source, dict):
        return source
    if isinstance(source, os.PathLike):
        return _read_file(Path(source))
    if isinstance(source, str):
        stripped = source.strip()
        if _looks_like_path(source) and _is_file(stripped):
            return _read_file(Path(stripped))
        data = load_yaml(source)
        if _looks_like_path(source) and data == stripped:
            raise _fail(f"file not found: {stripped}")
        return data
    if isinstance(source, bytes):
        return load_yaml(source)
    return source  # validators report "must be a mapping, got ..."
