"""SSH key files: the agent's, created once per host, and each job's; none is ever copied to another host.

Every device host (and the coordinator) has one agent key: connectors
authorise it on their devices and convoy's SSH client
(:mod:`convoy.connectors.ssh`) logs in with it to provision, authorise and
clean up.  A job's commands never get it: each job has its own key pair
(:mod:`convoy.tasks.run.jobkeys`), authorised on exactly its devices.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import socket
import subprocess
from pathlib import Path

from convoy.errors import DeviceError

AGENT_KEY_NAME = "agent_ed25519"


def public_key_path(private_key: Path) -> Path:
    """``<key>.pub``, beside the private key (OpenSSH's convention)."""
    return private_key.with_name(private_key.name + ".pub")


def ensure_agent_key(keys_dir: Path) -> Path:
    """Create the agent's ed25519 keypair once (0600); return the private key's path."""
    return ensure_key_pair(Path(keys_dir), AGENT_KEY_NAME, "convoy-agent")


def ensure_key_pair(keys_dir: Path, name: str, comment: str) -> Path:
    """Create the ed25519 keypair ``keys_dir/name`` once (0600, its directory 0700); the private key's path.

    Safe to call from several processes at once: a lock file serialises them
    and the key is generated under a temporary name, then renamed.
    """
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = keys_dir / name
    with open(keys_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if key.exists() and public_key_path(key).exists():
            return key
        tmp = keys_dir / f".{name}.{os.getpid()}"
        for stale in (tmp, public_key_path(tmp)):
            stale.unlink(missing_ok=True)
        result = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise OSError(f"ssh-keygen failed: {result.stderr.strip()}")
        tmp.chmod(0o600)
        os.replace(public_key_path(tmp), public_key_path(key))
        os.replace(tmp, key)
    return key


def fingerprint(public_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a ``type base64 [comment]`` key line (what ``ssh-keygen -l``
    prints), to name a key in messages without showing it."""
    try:
        blob = base64.b64decode(public_line.split()[1], validate=True)
    except (IndexError, ValueError):
        return "an unreadable key"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def describe_key(private_key: Path) -> str:
    """``key SHA256:... (<path>) of host <name>``: which key a login offered, for a refusal's message."""
    try:
        offered = fingerprint(public_key_path(Path(private_key)).read_text())
    except OSError:
        offered = "(public half unreadable)"
    return f"key {offered} ({private_key}) of host {socket.gethostname()}"


def key_blob(public_line: str) -> str:
    """``type base64`` of a key line: what identifies it in ``authorized_keys`` (options and comment aside)."""
    return " ".join(public_line.split()[:2])


def read_public_key(private_key: Path, device: str = "agent") -> str:
    """The one-line public key beside ``private_key``; :class:`DeviceError` if missing."""
    path = public_key_path(Path(private_key))
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise DeviceError(device, f"cannot read the public key {path}: {exc.strerror}") from None
