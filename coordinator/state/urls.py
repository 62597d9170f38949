"""Redis URLs as people may see them, and names Redis accepts (stdlib only: the ``lava-*`` commands use it)."""
from __future__ import annotations

from convoy.errors import redact_url

__all__ = ["redact_url", "safe_client_name"]


def safe_client_name(name: str) -> str:
    """What ``CLIENT SETNAME`` accepts: ASCII ``!``..``~`` only (anything else becomes ``_``)."""
    return "".join(c if "!" <= c <= "~" else "_" for c in name)
