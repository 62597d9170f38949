"""Values quoted in error messages, kept short whatever the user gave."""
from __future__ import annotations

from typing import Any

__all__ = ["shown"]


def shown(value: Any, limit: int = 64) -> str:
    """``repr(value)`` cut to about ``limit`` characters; a huge integer as its number of digits.

    A message must stay readable (and printable at all: Python refuses to turn
    an int of more than 4300 digits into text) whatever a job holds.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        try:
            digits = str(len(str(abs(value))))
        except ValueError:
            digits = "more than 4300"
        return f"a {'negative ' if value < 0 else ''}number of {digits} digits"
    text = repr(value[:limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit + 2 else text[:limit] + "..."
