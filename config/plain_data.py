"""Whether a document is plain data that can travel as a job: JSON types, text every process can hold.

Jobs travel as JSON and end up in files, environments and command lines, so
besides the types (string keys; strings, numbers, booleans, null, lists,
mappings) the values themselves must survive: no NUL characters, no lone
surrogates (not UTF-8), no NaN or infinity, no integer too long to write as
text.  The walk is iterative and bounded in depth, so cycles and deep nesting
in a dict given through the Python API are reported rather than crash.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from convoy.config.schemas import join_path, kind_of
from convoy.config.shown import shown
from convoy.config.yamlsafe import MAX_DEPTH
from convoy.errors import FieldError

__all__ = ["TOO_LONG_INT", "PlainDataProblems", "plain_data_problems", "text_problem"]

#: integers this large cannot be a job's: Python refuses to write ints of more than 4300 digits as text (or JSON)
TOO_LONG_INT = 10 ** 4300
#: most problems reported by one walk
MAX_PROBLEMS = 50


class PlainDataProblems(NamedTuple):
    """What is wrong with a document's data, in two kinds."""

    #: wrong shapes (non-string keys, objects, too deep): nothing else can be checked safely
    structure: list[FieldError]
    #: values no job can carry (NUL, lone surrogates, NaN, huge integers): the schema can still run
    values: list[FieldError]

    def all(self) -> list[FieldError]:
        return self.structure + self.values


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot travel in a job (as UTF-8 JSON, into files, environments and argv), or None."""
    if "\0" in text:
        return "contains a NUL character, which no file name, command or environment can hold"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds a lone surrogate such as '\\ud800')"
    return None


def _value_problem(item: Any) -> str | None:
    if isinstance(item, str):
        return text_problem(item)
    if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= TOO_LONG_INT:
        return "number too long (more than 4300 digits)"
    if isinstance(item, float) and not math.isfinite(item):
        return f"must be a finite number, got {item} (JSON has no NaN or Infinity)"
    return None


def plain_data_problems(value: Any, prefix: str = "") -> PlainDataProblems:
    """Every problem of ``value`` as job data (at most MAX_PROBLEMS), each at its dotted path."""
    found = PlainDataProblems([], [])
    stack: list[tuple[Any, str, int]] = [(value, prefix, 1)]
    while stack and len(found.structure) + len(found.values) < MAX_PROBLEMS:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            found.structure.append(FieldError(path, f"nested too deeply (limit {MAX_DEPTH} levels)"))
        elif isinstance(item, dict):
            children = []
            for key, sub in item.items():
                if not isinstance(key, str):
                    message = f"keys must be strings, got {kind_of(key)} {shown(key)} (quote it)"
                    found.structure.append(FieldError(join_path(path, shown(key)), message))
                elif text_problem(key):
                    found.values.append(FieldError(join_path(path, key), f"this key {text_problem(key)}"))
                else:
                    children.append((sub, join_path(path, key), depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed([(sub, join_path(path, i), depth + 1) for i, sub in enumerate(item)]))
        elif not isinstance(item, (str, int, float, bool, type(None))):
            found.structure.append(FieldError(path, "must be plain data (string, number, boolean, list or "
                                                    f"mapping), got {type(item).__name__}"))
        else:
            problem = _value_problem(item)
            if problem:
                found.values.append(FieldError(path, problem))
    return found
