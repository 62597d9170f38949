"""Redis URLs as people may see them, and names Redis accepts (stdlib only: the ``lava-*`` commands use it)."""
from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """``url`` without its password (for messages: secrets never reach output or errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def safe_client_name(name: str) -> str:
    """What ``CLIENT SETNAME`` accepts: ASCII ``!``..``~`` only (anything else becomes ``_``)."""
    return "".join(c if "!" <= c <= "~" else "_" for c in name)
