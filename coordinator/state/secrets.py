"""Job secrets in output: every occurrence of a secret value becomes ``***`` (as Testflinger and GitLab do).

Pure functions on strings.  Output arrives in chunks that may cut a secret in
two, so a writer keeps back the end of a chunk that could begin a secret
(:func:`mask_chunk`) and sends it with the next chunk, or alone at the end
(:func:`mask_rest`).
"""
from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


def _values(secrets: Iterable[str]) -> list[str]:
    # longest first: a secret that contains another is masked whole
    return sorted({s for s in secrets if s}, key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret value replaced by ``***``."""
    for value in _values(secrets):
        text = text.replace(value, MASK)
    return text


def _held_back(text: str, values: list[str]) -> int:
    """Length of the longest end of ``text`` that is the start (not the whole) of a secret."""
    longest = 0
    for value in values:
        for n in range(min(len(value) - 1, len(text)), longest, -1):
            if text.endswith(value[:n]):
                longest = n
                break
    return longest


def mask_chunk(held: str, chunk: str, secrets: Iterable[str]) -> tuple[str, str]:
    """Mask ``held + chunk``; return (what may be written now, what to hold until the next chunk)."""
    values = _values(secrets)
    text = mask(held + chunk, values)
    keep = _held_back(text, values)
    return (text[:-keep], text[-keep:]) if keep else (text, "")


def mask_rest(held: str, secrets: Iterable[str]) -> str:
    """The held-back end, masked, once no chunk follows."""
    return mask(held, secrets)
