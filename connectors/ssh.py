"""convoy's one SSH client (Fabric): every command Python runs on a device goes through here.

Connectors check reachability with it, the reserve phase copies users' keys
with it.  (Test commands use the real ``ssh``, set up by
:mod:`convoy.tasks.run.ssh`.)  A connection authenticates with one key file
only -- no SSH agent, no ``~/.ssh`` keys, no ``ssh_config`` -- and host keys
are not checked: devices are reinstalled between jobs, so their host keys
change by design (Testflinger does the same).

:func:`authorized_keys_script` is convoy's one ``authorized_keys`` writer.
"""
from __future__ import annotations

import shlex
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import tenacity

from convoy.errors import DeviceError
from convoy.retry import retry_call

if TYPE_CHECKING:
    from fabric import Connection


@dataclass(frozen=True)
class SSHResult:
    """What a command run over SSH left: exit status and its output."""

    status: int
    stdout: str
    stderr: str


def connection(host: str, port: int, username: str, key_file: Path, *, timeout: float = 10.0) -> "Connection":
    """A Fabric connection to ``username@host:port`` with ``key_file`` only (not yet opened)."""
    from fabric import Config, Connection  # slow import: only the processes that reach devices pay for it
    from paramiko.config import SSHConfig

    # an empty SSH config: nothing from ~/.ssh/config or /etc/ssh/ssh_config redirects the connection
    config = Config(ssh_config=SSHConfig(), overrides={"load_ssh_configs": False, "run": {"in_stream": False}})
    return Connection(host, user=username, port=port, config=config, connect_timeout=max(1, int(timeout)),
                      connect_kwargs={"key_filename": str(key_file), "look_for_keys": False,
                                      "allow_agent": False, "banner_timeout": timeout, "auth_timeout": timeout})


def run_ssh(host: str, port: int, username: str, key_file: Path, command: str, *,
            connect_timeout: float = 10.0, timeout: float = 10.0) -> SSHResult:
    """Run ``command`` on the device; its status and output (connection errors are raised)."""
    with connection(host, port, username, key_file, timeout=connect_timeout) as conn:
        result = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
    return SSHResult(result.exited, result.stdout, result.stderr)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """What a login that may work on the next try raises (refused, timed out, auth, protocol)."""
    import paramiko
    from invoke.exceptions import CommandTimedOut

    return (paramiko.SSHException, OSError, EOFError, CommandTimedOut)


class _NotYet(Exception):
    """The device answered, but not as a ready device does (worth another attempt)."""


def _retry_until_ready(device: str, attempt: Callable[[], None], errors: tuple[type[BaseException], ...], *,
                       attempts: int, retry_delay: float, cancel: threading.Event | None) -> str | None:
    """Run ``attempt`` up to ``attempts`` times with convoy's retry policy; the last failure's reason, or None.

    A set ``cancel`` ends the wait at once and raises :class:`DeviceError`.
    """
    cancel = cancel if cancel is not None else threading.Event()

    def once() -> None:
        if cancel.is_set():
            raise DeviceError(device, "cancelled while checking SSH reachability")
        attempt()

    retried: tuple[type[BaseException], ...] = (*errors, _NotYet)
    try:
        retry_call(once, errors=retried, attempts=max(1, attempts), stop=cancel,
                   backoff=tenacity.wait_fixed(retry_delay), on_retry=lambda _state: None)
    except retried as exc:
        if cancel.is_set():
            raise DeviceError(device, "cancelled while checking SSH reachability") from None
        return str(exc) or type(exc).__name__
    return None


def check_ssh(device: str, host: str, port: int, username: str, key_file: Path, *,
              attempts: int = 5, timeout: float = 5.0, retry_delay: float = 0.5,
              cancel: threading.Event | None = None, hint: str = "") -> None:
    """Log in and run ``true``, retrying a few times; raise :class:`DeviceError` if that fails.

    ``hint`` is appended to the error (what the user should check).
    """
    def attempt() -> None:
        result = run_ssh(host, port, username, key_file, "true", connect_timeout=timeout, timeout=timeout)
        if result.status != 0:
            raise _NotYet(f"'true' exited with status {result.status}")

    reason = _retry_until_ready(device, attempt, _transient_errors(), attempts=attempts,
                                retry_delay=retry_delay, cancel=cancel)
    if reason is not None:
        from convoy.connectors.sshkeys import describe_key

        raise DeviceError(device, f"not reachable over SSH as {username}@{host}:{port} "
                                  f"after {max(1, attempts)} attempt(s): {reason} (offered "
                                  f"{describe_key(key_file)}){hint}")


def check_ssh_banner(device: str, host: str, port: int, *, attempts: int = 5, timeout: float = 5.0,
                     retry_delay: float = 0.5, cancel: threading.Event | None = None, hint: str = "") -> None:
    """Check that an SSH server answers on ``host:port`` (its ``SSH-2.0`` banner); raise DeviceError if not.

    A full login costs a key exchange (about 0.1 s of CPU on both ends); an
    emulated device's keys and home were written by convoy a moment before,
    so its server answering is what is left to prove.
    """
    def attempt() -> None:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            banner = sock.recv(256)
        if not banner.startswith(b"SSH-2.0-"):
            raise _NotYet(f"no SSH banner (got {banner[:40]!r})")

    reason = _retry_until_ready(device, attempt, (OSError,), attempts=attempts, retry_delay=retry_delay,
                                cancel=cancel)
    if reason is not None:
        raise DeviceError(device, f"no SSH server answers at {host}:{port} after {max(1, attempts)} attempt(s): "
                                  f"{reason}{hint}")


# --- authorized_keys ------------------------------------------------------------------------

def _key_fields(lines: Iterable[str]) -> list[tuple[str, str, str]]:
    """(type, blob, line) of each key line (``type base64 [comment]``), each ``type blob`` once; blanks skipped."""
    seen: dict[tuple[str, str], str] = {}
    for raw in lines:
        line = " ".join(raw.split())
        if not line:
            continue
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise ValueError(f"not an SSH public key line: {line[:60]!r}")
        seen.setdefault((parts[0], parts[1]), line)
    return [(key_type, blob, line) for (key_type, blob), line in seen.items()]


def authorized_keys_script(key_lines: Iterable[str]) -> str:
    """A POSIX sh script that adds the keys to ``~/.ssh/authorized_keys`` idempotently.

    ``key_lines`` are ``type base64 [comment]`` lines.  ``~/.ssh`` gets 0700
    and the file 0600 (created if missing); a key is added only when no line
    of the file holds its ``type blob`` yet (with or without options and
    comment); a last line without a newline gets one first.  The script prints
    how many keys it added and stops with a non-zero status at the first error.
    """
    args = " ".join(f"{shlex.quote(t)} {shlex.quote(b)} {shlex.quote(line)}" for t, b, line in _key_fields(key_lines))
    return "\n".join([
        "set -e",
        "umask 077",
        'dir="$HOME/.ssh"; file="$dir/authorized_keys"',
        'mkdir -p "$dir"',
        'chmod 700 "$dir"',
        '[ -e "$file" ] || : > "$file"',
        'chmod 600 "$file"',
        'if [ -s "$file" ] && [ -n "$(tail -c 1 "$file")" ]; then echo >> "$file"; fi',
        "added=0",
        f"set -- {args}",
        'while [ "$#" -ge 3 ]; do',
        "  if ! awk -v t=\"$1\" -v b=\"$2\" '{for (i = 1; i < NF; i++) if ($i == t && $(i + 1) == b) found = 1}"
        " END {exit !found}' \"$file\"; then",
        '    printf \'%s\\n\' "$3" >> "$file"',
        "    added=$((added + 1))",
        "  fi",
        "  shift 3",
        "done",
        'echo "$added"',
        "",
    ])


def add_authorized_keys(host: str, port: int, username: str, key_file: Path, key_lines: Iterable[str], *,
                        connect_timeout: float = 15.0, command_timeout: float = 60.0) -> int:
    """Authorise ``key_lines`` for ``username`` on the device (one command); return how many were new.

    Raises whatever the connection raises, or :class:`RuntimeError` if the
    command fails on the device.
    """
    return _run_counting(host, port, username, key_file, authorized_keys_script(key_lines), "adding the keys",
                         connect_timeout=connect_timeout, command_timeout=command_timeout)


def _run_counting(host: str, port: int, username: str, key_file: Path, script: str, what: str, *,
                  connect_timeout: float, command_timeout: float) -> int:
    """Run one of the ``authorized_keys`` scripts on the device; the count it prints last."""
    result = run_ssh(host, port, username, key_file, f"sh -c {shlex.quote(script)}",
                     connect_timeout=connect_timeout, timeout=command_timeout)
    if result.status != 0:
        detail = (result.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{what} exited with status {result.status}" + (f": {detail}" if detail else ""))
    try:
        return int(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return 0


def remove_authorized_keys_script(blobs: Iterable[str]) -> str:
    """A POSIX sh script that removes every ``authorized_keys`` line holding one of ``blobs`` (``type base64``),
    whatever its options or comment; it prints how many lines it removed.  A missing file removes nothing."""
    fields = [blob.split() for blob in blobs if len(blob.split()) == 2]
    args = " ".join(f"{shlex.quote(t)} {shlex.quote(b)}" for t, b in fields)
    return "\n".join([
        "set -e",
        'file="$HOME/.ssh/authorized_keys"',
        '[ -f "$file" ] || { echo 0; exit 0; }',
        f"set -- {args}",
        'drop=""',
        'while [ "$#" -ge 2 ]; do drop="$drop $1:$2"; shift 2; done',
        'tmp="$file.convoy.$$"',
        "awk -v drop=\"$drop\" 'BEGIN {n = split(drop, d, \" \"); for (i = 1; i <= n; i++) gone[d[i]] = 1}"
        " {for (i = 1; i < NF; i++) if ((($i \":\" $(i + 1)) in gone)) {removed++; next}; print}"
        " END {print removed + 0 > \"/dev/stderr\"}' \"$file\" > \"$tmp\" 2> \"$tmp.count\"",
        'chmod 600 "$tmp"',
        'mv "$tmp" "$file"',
        'cat "$tmp.count"; rm -f "$tmp.count"',
        "",
    ])


def remove_authorized_keys(host: str, port: int, username: str, key_file: Path, blobs: Iterable[str], *,
                           connect_timeout: float = 15.0, command_timeout: float = 60.0) -> int:
    """Remove the keys ``blobs`` from ``username``'s ``authorized_keys`` on the device; how many lines went."""
    return _run_counting(host, port, username, key_file, remove_authorized_keys_script(blobs), "removing the keys",
                         connect_timeout=connect_timeout, command_timeout=command_timeout)
