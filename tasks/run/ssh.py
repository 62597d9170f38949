"""The SSH client set-up test commands get: ``ssh ubuntu@$DEVICE_IP`` just works.

OpenSSH reads ``~/.ssh/config`` from the user's passwd entry, not $HOME, so
convoy puts small ``ssh``/``scp``/``sftp`` wrappers first on PATH that add
``-F <job's config>``; the config names the agent's key and each device's
port, and skips host-key prompts for these throwaway devices.
"""
from __future__ import annotations

import shlex
import shutil
import stat
from pathlib import Path
from typing import Iterable

from convoy.connectors.base import SSHTarget
from convoy.errors import ConvoyError

WRAPPED = ("ssh", "scp", "sftp")
#: characters ssh_config reads as syntax (separators, quotes, escapes, %-tokens, comments)
_SPECIAL = set('"\'\\%#=')


def _word(what: str, value: object) -> str:
    """``value`` as one ssh_config word, or ConvoyError: a newline would add directives
    (an injected ``ProxyCommand`` runs a command), a space would add arguments.

    Job validation already rejects such user names; this is the last line of defence.
    """
    text = str(value)
    if not text or "${" in text or any(c.isspace() or not c.isprintable() or c in _SPECIAL for c in text):
        raise ConvoyError(f"refusing to write {what} {text[:64]!r} into the SSH client config: "
                          "it must be one word without spaces, quotes or control characters")
    return text


def _path(what: str, path: Path) -> str:
    """A file path as a quoted ssh_config argument; spaces are fine, line breaks and quotes are not."""
    text = str(path)
    if any(not c.isprintable() or c in '"' for c in text):
        raise ConvoyError(f"refusing to write {what} {text[:64]!r} into the SSH client config: "
                          "it must not contain quotes or control characters")
    return '"' + text.replace("%", "%%") + '"'


def write_ssh_setup(job_dir: Path, identity: Path, targets: Iterable[SSHTarget]) -> Path:
    """Write the config and wrappers under ``job_dir/.convoy-ssh``; return the bin dir for PATH."""
    base = job_dir / ".convoy-ssh"
    bin_dir = base / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    config = base / "config"
    lines: list[str] = []
    for target in targets:
        lines += [f"Host {_word('host', target.host)}", f"  Port {_word('port', target.port)}",
                  f"  User {_word('user name', target.username)}", ""]
    lines += [
        "Host *",
        f"  IdentityFile {_path('identity file', identity)}",
        "  IdentitiesOnly yes",
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "  BatchMode yes",
        "  ConnectTimeout 15",
        "",
    ]
    config.write_text("\n".join(lines))
    for tool in WRAPPED:
        real = shutil.which(tool)
        if real is None:
            continue
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(real)} -F {shlex.quote(str(config))} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir
