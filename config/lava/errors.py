"""Where convoy's findings on a translated LAVA job belong in the LAVA document.

The translator records, for each convoy field it writes, the LAVA field it
came from (convoy path → LAVA path).  convoy's validator reports problems at
convoy paths; these helpers move them back to the LAVA field the user wrote,
and tell which of them are about LAVA fields at all, so that
:func:`convoy.config.lava.translate.validate_lava_job` reports every problem once, at a
path the user can find.
"""
from __future__ import annotations

from collections.abc import Collection

from convoy.errors import FieldError

__all__ = ["is_lava_field", "overlaps", "remap", "under"]


def origin(path: str, origins: dict[str, str]) -> str | None:
    """The longest convoy path in ``origins`` that ``path`` is or lies under."""
    best = None
    for convoy_path in origins:
        if under(path, convoy_path) and (best is None or len(convoy_path) > len(best)):
            best = convoy_path
    return best


def remap(error: FieldError, origins: dict[str, str]) -> FieldError:
    """``error`` at the LAVA field its convoy field came from."""
    best = origin(error.path, origins)
    if best is None:
        return error
    return FieldError(origins[best] + error.path[len(best):], error.message)


def is_lava_field(error: FieldError, origins: dict[str, str], passthrough: Collection[str]) -> bool:
    """Whether ``error`` (already remapped) is about a LAVA field, or a convoy field in ``passthrough``."""
    return error.path in origins.values() or any(under(error.path, lava) for lava in origins.values()) \
        or error.path.split(".")[0].split("[")[0] in passthrough


def under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or a field or item inside it."""
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def overlaps(a: str, b: str) -> bool:
    """Whether one of the paths lies within the other."""
    return under(a, b) or under(b, a)
