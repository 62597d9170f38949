"""Durations in job and agent files: seconds, or strings such as ``2h30m``.

Testflinger accepts ``timeout: "3600"`` and ``timeout: 2h30m``; convoy reads
the same forms (plus days and spelled-out units) and always hands on plain
seconds, so nothing downstream parses strings.  An upper bound keeps a typo
(``timeout: 99999999999``) from overflowing dates and timers later.
"""
from __future__ import annotations

import math
import re

from convoy.config.shown import shown

__all__ = ["MAX_DURATION", "DurationError", "as_seconds", "parse_duration"]

#: the longest duration convoy accepts anywhere: 365 days
MAX_DURATION = 365 * 24 * 3600

_UNITS: dict[str, tuple[str, int]] = {}
for _canon, _secs, _names in (
    ("d", 86400, ("d", "day", "days")),
    ("h", 3600, ("h", "hr", "hrs", "hour", "hours")),
    ("m", 60, ("m", "min", "mins", "minute", "minutes")),
    ("s", 1, ("s", "sec", "secs", "second", "seconds")),
):
    for _name in _names:
        _UNITS[_name] = (_canon, _secs)
_ORDER = "dhms"

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")
_HINT = "give seconds (3600) or a duration such as '90s', '45m', '2h30m', '1h 30m', '1d'"


class DurationError(ValueError):
    """A duration that cannot be used; ``reason`` is the message without the field name."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def _check_range(seconds: float, field: str, allow_zero: bool, given: object) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise DurationError(field, f"must be a finite duration, got {shown(given)}")
    if seconds < 0:
        raise DurationError(field, f"must not be negative, got {shown(given)}")
    if seconds == 0 and not allow_zero:
        raise DurationError(field, "must be positive, got 0")
    if seconds > MAX_DURATION:
        raise DurationError(field, f"must be at most {MAX_DURATION} seconds (365 days), got {shown(given)}")
    return float(seconds)


def _parse_units(text: str, field: str) -> float:
    pos, total, last = 0, 0.0, -1
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match or match.end() == pos:
            raise DurationError(field, f"not a duration: {text!r}; {_HINT}")
        number, unit = match.groups()
        if unit not in _UNITS:
            raise DurationError(field, f"unknown unit {unit!r} in {text!r}; use d, h, m or s")
        canon, secs = _UNITS[unit]
        index = _ORDER.index(canon)
        if index <= last:
            raise DurationError(field, f"units in {text!r} must go from largest to smallest, each once (e.g. '1d2h30m')")
        last = index
        total += float(number) * secs
        pos = match.end()
    return total


def parse_duration(value: int | float | str, *, field: str, allow_zero: bool = False) -> float:
    """Seconds of ``value`` (a number, ``"3600"``, ``"2h30m"``, ``"1h 30m"``, ``"1d"``).

    Raises :class:`DurationError` (a ``ValueError``) for booleans, garbage,
    negative, non-finite, too large, or zero values (zero only with
    ``allow_zero``).
    """
    if isinstance(value, bool):
        raise DurationError(field, f"must be a duration, got a boolean ({value!r}); {_HINT}")
    if isinstance(value, int):  # exact: float() of a 400-digit int overflows
        if value > MAX_DURATION:
            raise DurationError(field, f"must be at most {MAX_DURATION} seconds (365 days), got {shown(value)}")
        if value < 0:
            raise DurationError(field, f"must not be negative, got {shown(value)}")
        return _check_range(float(value), field, allow_zero, value)
    if isinstance(value, float):
        return _check_range(value, field, allow_zero, value)
    if not isinstance(value, str):
        raise DurationError(field, f"must be a duration, got {type(value).__name__}; {_HINT}")
    text = value.strip().lower()
    if not text:
        raise DurationError(field, f"must be a duration, got an empty string; {_HINT}")
    if len(text) > 64:
        raise DurationError(field, f"not a duration: {value[:32]!r}...; {_HINT}")
    if _NUMBER.fullmatch(text):
        return _check_range(float(text), field, allow_zero, value)
    if text.startswith("-"):
        raise DurationError(field, f"must not be negative, got {value!r}")
    return _check_range(_parse_units(text, field), field, allow_zero, value)


def as_seconds(seconds: float) -> int | float:
    """``seconds`` as an int when whole (``3600.0`` → ``3600``), so stored jobs read naturally."""
    return int(seconds) if float(seconds).is_integer() else seconds
