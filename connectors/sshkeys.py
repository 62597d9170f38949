"""The agent's SSH key files: created once per host, never copied anywhere.

Every device host (and the coordinator) has one agent key: connectors
authorise it on their devices, and convoy's SSH client
(:mod:`convoy.connectors.ssh`) and the test commands' ``ssh`` log in with it.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from convoy.errors import DeviceError

AGENT_KEY_NAME = "agent_ed25519"


def public_key_path(private_key: Path) -> Path:
    """``<key>.pub``, beside the private key (OpenSSH's convention)."""
    return private_key.with_name(private_key.name + ".pub")


def ensure_agent_key(keys_dir: Path) -> Path:
    """Create the agent's ed25519 keypair once (0600); return the private key's path.

    Safe to call from several processes at once: a lock file serialises them
    and the key is generated under a temporary name, then renamed.
    """
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = keys_dir / AGENT_KEY_NAME
    with open(keys_dir / ".agent_key.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if key.exists() and public_key_path(key).exists():
            return key
        tmp = keys_dir / f".{AGENT_KEY_NAME}.{os.getpid()}"
        for stale in (tmp, public_key_path(tmp)):
            stale.unlink(missing_ok=True)
        result = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "convoy-agent", "-f", str(tmp)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise OSError(f"ssh-keygen failed: {result.stderr.strip()}")
        tmp.chmod(0o600)
        os.replace(public_key_path(tmp), public_key_path(key))
        os.replace(tmp, key)
    return key


def read_public_key(private_key: Path, device: str = "agent") -> str:
    """The one-line public key beside ``private_key``; :class:`DeviceError` if missing."""
    path = public_key_path(Path(private_key))
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise DeviceError(device, f"cannot read the public key {path}: {exc.strerror}") from None
