"""Importing users' SSH keys (``gh:user``, ``lp:user``), as ``ssh-import-id`` does.

A key id names a user of a key server: ``gh:`` GitHub (``/<user>.keys``),
``lp:`` Launchpad (``/~<user>/+sshkeys``); both URL templates are settings
(``CONVOY_GITHUB_KEYS_URL``, ``CONVOY_LAUNCHPAD_KEYS_URL``).  Every key
line is checked before it goes anywhere near a device: ``<type> <base64>
[comment]`` whose decoded blob names the same type (what ``ssh-keygen -l``
checks), no options, no control characters.  Fetching retries network
errors, 5xx, 408 and 429 with exponential backoff; 404 and an empty or
keyless answer fail at once, naming the key id.

Everything except :func:`fetch` and :func:`import_keys` is pure.  The keys
reach a device through :func:`convoy.connectors.ssh.add_authorized_keys`.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import re
import struct
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import quote, urlsplit

import tenacity

from convoy.errors import KeyImportError
from convoy.retry import retry_call

SERVICES = {"gh": "GitHub", "lp": "Launchpad"}
#: the same ids the job schema accepts
KEY_ID_RE = re.compile(r"^(gh|lp):([A-Za-z0-9][A-Za-z0-9._-]*)$")
#: what an SSH key type looks like (ssh-ed25519, ecdsa-sha2-nistp256, sk-ssh-ed25519@openssh.com, ...)
KEY_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9@._-]{2,80}$")
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
#: no key list is this long; an answer that is, is not one
MAX_BODY = 1 << 20
USER_AGENT = "convoy-ssh-import"

Log = Callable[[str], None]


@dataclass(frozen=True)
class KeyId:
    service: str  # "gh" or "lp"
    user: str

    def __str__(self) -> str:
        return f"{self.service}:{self.user}"

    @property
    def service_name(self) -> str:
        return SERVICES[self.service]


def parse_key_id(text: str) -> KeyId:
    """``gh:alice`` → KeyId("gh", "alice"); :class:`KeyImportError` for anything else."""
    match = KEY_ID_RE.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise KeyImportError(str(text), "not a key id: use gh:<github-user> or lp:<launchpad-user>")
    return KeyId(match.group(1), match.group(2))


def key_url(key_id: KeyId, github_template: str, launchpad_template: str) -> str:
    """The URL of ``key_id``'s keys: its service's template with ``{user}`` filled in (URL-quoted)."""
    template = github_template if key_id.service == "gh" else launchpad_template
    if "{user}" not in template:
        raise KeyImportError(str(key_id), f"the {key_id.service_name} key URL {template!r} has no {{user}}")
    url = template.replace("{user}", quote(key_id.user, safe=""))
    if urlsplit(url).scheme not in ("http", "https"):
        raise KeyImportError(str(key_id), f"the {key_id.service_name} key URL {template!r} is not http(s)")
    return url


@dataclass(frozen=True)
class PublicKey:
    """One SSH public key: ``type``, base64 ``blob``, optional ``comment``."""

    type: str
    blob: str
    comment: str = ""

    @property
    def identity(self) -> str:
        """``type blob``: what makes two lines the same key, whatever their comments."""
        return f"{self.type} {self.blob}"

    @property
    def line(self) -> str:
        return f"{self.identity} {self.comment}" if self.comment else self.identity

    def tagged(self, key_id: KeyId | str) -> "PublicKey":
        """The key with ``# ssh-import-id <id>`` after its comment (``ssh-import-id -r`` finds it)."""
        tag = f"# ssh-import-id {key_id}"
        return PublicKey(self.type, self.blob, f"{self.comment} {tag}" if self.comment else tag)


def _ssh_strings(raw: bytes) -> list[bytes]:
    """A public key blob as its length-prefixed fields (RFC 4253 strings and mpints), all bytes used."""
    fields, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ValueError("truncated length")
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        pos += 4
        if pos + length > len(raw):
            raise ValueError("truncated field")
        fields.append(raw[pos:pos + length])
        pos += length
    return fields


def parse_public_key(line: str) -> PublicKey | None:
    """The key on ``line``, or None unless it is a well-formed ``type base64 [comment]`` line."""
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in line):
        return None
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or not KEY_TYPE_RE.match(parts[0]) or not _BASE64_RE.match(parts[1]):
        return None
    key_type, blob = parts[0], parts[1]
    try:
        fields = _ssh_strings(base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError):
        return None
    if len(fields) < 2 or fields[0] != key_type.encode() or not all(fields[1:]):
        return None
    comment = " ".join(parts[2].split()) if len(parts) > 2 else ""
    return PublicKey(key_type, blob, comment)


def parse_key_list(key_id: KeyId | str, body: str, source: str = "the key server") -> list[PublicKey]:
    """The keys of a key server's answer; :class:`KeyImportError` when it holds none.

    Blank lines and ``#`` comments are skipped; other lines that are not keys
    are ignored as ``ssh-import-id`` ignores them, unless no line is a key.
    """
    keys: list[PublicKey] = []
    other: list[str] = []
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = parse_public_key(line)
        if key is None:
            other.append(line)
        else:
            keys.append(key)
    if not keys:
        if not other:
            raise KeyImportError(str(key_id), f"{source} lists no SSH keys for this user")
        raise KeyImportError(str(key_id), f"the answer of {source} holds no SSH public key "
                                          f"(it starts with {other[0][:60]!r})")
    return unique_keys(keys)


def unique_keys(keys: Iterable[PublicKey]) -> list[PublicKey]:
    """``keys`` without repeats of the same ``type blob`` (the first one stays)."""
    seen: dict[str, PublicKey] = {}
    for key in keys:
        seen.setdefault(key.identity, key)
    return list(seen.values())


# --- fetching ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one key server: ``attempts`` tries, ``timeout`` each, backoff between."""

    attempts: int = 4
    timeout: float = 10.0
    backoff: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0

    def delays(self) -> list[float]:
        """The pauses between attempts (one fewer than ``attempts``)."""
        return [min(self.max_delay, self.backoff * self.factor ** i) for i in range(max(0, self.attempts - 1))]


def retryable_status(status: int) -> bool:
    """Worth another try: server errors, request timeout, rate limiting."""
    return status >= 500 or status in (408, 429)


class _Retry(Exception):
    """A failure worth another attempt."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Fatal(Exception):
    """A failure no retry can fix (404, 403, a body that is not a key list)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        self.reason = reason
        self.status = status


def _fetch_once(url: str, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        status = f"HTTP {exc.code}" + (f" {exc.reason}" if exc.reason else "")
        if retryable_status(exc.code):
            raise _Retry(f"{status} from {url}") from None
        raise _Fatal(f"{status} from {url}", exc.code) from None
    except urllib.error.URLError as exc:
        raise _Retry(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Retry(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if len(data) > MAX_BODY:
        raise _Fatal(f"the answer of {url} is larger than {MAX_BODY} bytes: not a key list")
    return data.decode("utf-8", errors="replace")


def fetch(url: str, key_id: KeyId, policy: RetryPolicy = RetryPolicy(),
          cancel: threading.Event | None = None, log: Log | None = None) -> str:
    """GET ``url`` with ``policy``'s retries (convoy's retry policy on the key server's schedule).

    The body, or :class:`KeyImportError` naming ``key_id``.
    """
    cancel = cancel if cancel is not None else threading.Event()
    attempts = max(1, policy.attempts)

    def once() -> str:
        if cancel.is_set():
            raise KeyImportError(str(key_id), "cancelled")
        try:
            return _fetch_once(url, policy.timeout)
        except _Fatal as exc:
            if exc.status == 404:
                raise KeyImportError(str(key_id), f"no such {key_id.service_name} user ({exc.reason})") from None
            raise KeyImportError(str(key_id), exc.reason) from None

    def say_retrying(state: tenacity.RetryCallState) -> None:
        if log and state.outcome is not None and state.next_action is not None:
            reason = getattr(state.outcome.exception(), "reason", "")
            log(f"{key_id}: {reason}; retrying in {state.next_action.sleep:g}s")

    schedule = tenacity.wait_exponential(multiplier=policy.backoff, exp_base=policy.factor, min=0,
                                         max=policy.max_delay)
    try:
        return retry_call(once, errors=(_Retry,), attempts=attempts, stop=cancel, backoff=schedule,
                          on_retry=say_retrying)
    except _Retry as exc:
        if cancel.is_set():
            raise KeyImportError(str(key_id), "cancelled") from None
        raise KeyImportError(str(key_id), f"{exc.reason} (gave up after {attempts} attempts)") from None


def import_key(key_id: KeyId, github_template: str, launchpad_template: str,
               policy: RetryPolicy = RetryPolicy(), cancel: threading.Event | None = None,
               log: Log | None = None) -> list[PublicKey]:
    """The keys of one id, each tagged ``# ssh-import-id <id>``."""
    url = key_url(key_id, github_template, launchpad_template)
    body = fetch(url, key_id, policy, cancel, log)
    return [key.tagged(key_id) for key in parse_key_list(key_id, body, url)]


def import_keys(key_ids: Iterable[str], github_template: str, launchpad_template: str,
                policy: RetryPolicy = RetryPolicy(), cancel: threading.Event | None = None,
                log: Log | None = None) -> list[PublicKey]:
    """Import every id once (repeats are skipped); all their keys, each key once.

    The first id that cannot be imported raises :class:`KeyImportError`.
    """
    ids = list(dict.fromkeys(parse_key_id(k) for k in key_ids))
    keys: list[PublicKey] = []
    for key_id in ids:
        found = import_key(key_id, github_template, launchpad_template, policy, cancel, log)
        if log:
            log(f"imported {len(found)} key(s) for {key_id}")
        keys += found
    return unique_keys(keys)
