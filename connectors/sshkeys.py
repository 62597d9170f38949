"""The agent's SSH key, and the small SSH client the connectors use.

Every device host has one agent key: connectors authorise it on their
devices and use it to check that a provisioned device is reachable.  Host
keys are not checked: devices are reinstalled between jobs, so their host
keys change by design (Testflinger does the same).
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SSHResult:
    status: int
    stdout: str
    stderr: str


def run_ssh(host: str, port: int, username: str, key_file: Path, command: str, *,
            stdin: str | None = None, timeout: float = 10.0) -> SSHResult:
    """Run ``command`` on ``username@host`` with ``key_file`` only (no agent, no ~/.ssh keys)."""
    import paramiko  # slow import; only the processes that reach devices pay for it

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.MissingHostKeyPolicy())  # accept: see module doc
    try:
        client.connect(host, port=port, username=username, key_filename=str(key_file),
                       look_for_keys=False, allow_agent=False, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
        chan_in, chan_out, chan_err = client.exec_command(command, timeout=timeout)
        if stdin is not None:
            chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        out = chan_out.read().decode(errors="replace")
        err = chan_err.read().decode(errors="replace")
        return SSHResult(chan_out.channel.recv_exit_status(), out, err)
    finally:
        client.close()


def check_ssh(device: str, host: str, port: int, username: str, key_file: Path, *,
              attempts: int = 5, timeout: float = 5.0, retry_delay: float = 0.5,
              cancel: threading.Event | None = None, hint: str = "") -> None:
    """Log in and run ``true``, retrying a few times; raise :class:`DeviceError` if that fails.

    ``hint`` is appended to the error (what the user should check).
    """
    import paramiko

    cancel = cancel if cancel is not None else threading.Event()
    attempts = max(1, attempts)
    reason = "no attempt made"
    for attempt in range(attempts):
        if cancel.is_set():
            raise DeviceError(device, "cancelled while checking SSH reachability")
        try:
            result = run_ssh(host, port, username, key_file, "true", timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
        else:
            if result.status == 0:
                return
            reason = f"'true' exited with status {result.status}"
        if attempt + 1 < attempts and cancel.wait(retry_delay):
            raise DeviceError(device, "cancelled while checking SSH reachability")
    raise DeviceError(device, f"not reachable over SSH as {username}@{host}:{port} "
                              f"after {attempts} attempt(s): {reason}{hint}")


def check_ssh_banner(device: str, host: str, port: int, *, attempts: int = 5, timeout: float = 5.0,
                     retry_delay: float = 0.5, cancel: threading.Event | None = None, hint: str = "") -> None:
    """Check that an SSH server answers on ``host:port`` (its ``SSH-2.0`` banner); raise DeviceError if not.

    A full login costs a key exchange (about 0.1 s of CPU on both ends); an
    emulated device's keys and home were written by convoy a moment before,
    so its server answering is what is left to prove.
    """
    import socket

    cancel = cancel if cancel is not None else threading.Event()
    reason = "no attempt made"
    for attempt in range(max(1, attempts)):
        if cancel.is_set():
            raise DeviceError(device, "cancelled while checking SSH reachability")
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                banner = sock.recv(256)
            if banner.startswith(b"SSH-2.0-"):
                return
            reason = f"no SSH banner (got {banner[:40]!r})"
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
        if attempt + 1 < attempts and cancel.wait(retry_delay):
            raise DeviceError(device, "cancelled while checking SSH reachability")
    raise DeviceError(device, f"no SSH server answers at {host}:{port} after {attempts} attempt(s): {reason}{hint}")
