"""Durations: seconds or '2h30m'-style strings, always handed on as seconds."""
from __future__ import annotations

import pytest

from convoy.config.durations import MAX_DURATION, DurationError, as_seconds, parse_duration


@pytest.mark.parametrize("value, seconds", [
    (3600, 3600.0), (0.5, 0.5), ("3600", 3600.0), (" 42 ", 42.0), ("1.5", 1.5), ("+7", 7.0),
    ("90s", 90.0), ("45m", 2700.0), ("2h30m", 9000.0), ("1h 30m", 5400.0), ("1d", 86400.0),
    ("1d2h3m4s", 93784.0), ("1.5h", 5400.0), ("2 hours 5 minutes", 7500.0), ("10 sec", 10.0),
    ("1H30M", 5400.0), ("365d", float(MAX_DURATION)),
])
def test_accepted(value, seconds):
    result = parse_duration(value, field="timeout")
    assert result == seconds and isinstance(result, float)


@pytest.mark.parametrize("value, reason", [
    (-1, "must not be negative, got -1"),
    ("-5", "must not be negative, got '-5'"),
    ("-2h", "must not be negative, got '-2h'"),
    (0, "must be positive, got 0"),
    ("0s", "must be positive, got 0"),
    (True, "must be a duration, got a boolean (True)"),
    (None, "must be a duration, got NoneType"),
    ([60], "must be a duration, got list"),
    ("", "must be a duration, got an empty string"),
    ("soon", "not a duration: 'soon'"),
    ("1h30", "not a duration: '1h30'"),
    ("5x", "unknown unit 'x' in '5x'"),
    ("30m1h", "must go from largest to smallest, each once"),
    ("1h1h", "must go from largest to smallest, each once"),
    (float("nan"), "must be a finite duration"),
    (float("inf"), "must be a finite duration"),
    ("inf", "not a duration: 'inf'"),
    (10**400, "must be at most 31536000 seconds"),
    (MAX_DURATION + 1, "must be at most 31536000 seconds"),
    ("366d", "must be at most 31536000 seconds"),
    ("9" * 100, "not a duration"),
])
def test_rejected(value, reason):
    with pytest.raises(DurationError) as info:
        parse_duration(value, field="reserve_data.timeout")
    assert reason in info.value.reason
    assert str(info.value).startswith("reserve_data.timeout: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [0, 0.0, "0", "0s"])
def test_zero_only_when_allowed(value):
    assert parse_duration(value, field="delay", allow_zero=True) == 0.0
    with pytest.raises(DurationError):
        parse_duration(value, field="delay")


def test_as_seconds_gives_ints_when_whole():
    assert as_seconds(3600.0) == 3600 and type(as_seconds(3600.0)) is int
    assert as_seconds(1.5) == 1.5
