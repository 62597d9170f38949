"""The SSH client set-up test commands get: ``ssh ubuntu@$DEVICE_IP`` just works.

OpenSSH reads ``~/.ssh/config`` from the user's passwd entry, not $HOME, so
convoy puts small ``ssh``/``scp``/``sftp`` wrappers first on PATH that add
``-F <job's config>``; the config names the agent's key and each device's
port, and skips host-key prompts for these throwaway devices.
"""
from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Iterable

from convoy.connectors.base import SSHTarget

WRAPPED = ("ssh", "scp", "sftp")


def write_ssh_setup(job_dir: Path, identity: Path, targets: Iterable[SSHTarget]) -> Path:
    """Write the config and wrappers under ``job_dir/.convoy-ssh``; return the bin dir for PATH."""
    base = job_dir / ".convoy-ssh"
    bin_dir = base / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    config = base / "config"
    lines: list[str] = []
    for target in targets:
        lines += [f"Host {target.host}", f"  Port {target.port}", f"  User {target.username}", ""]
    lines += [
        "Host *",
        f"  IdentityFile {identity}",
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
        wrapper.write_text(f'#!/bin/sh\nexec {real} -F "{config}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir
