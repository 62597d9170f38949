"""Each job's own SSH key pair: trusted by exactly its devices, used by its commands, revoked at cleanup.

No private key leaves the host that made it, and no job's commands get a
host's agent key:

* a device job (single-device, or a child of a multi job) makes its key on
  its device's host when it provisions (``<job dir>/.convoy-key/``); the
  connector, logged in with the host's agent key, authorises it on the
  device; its commands (``test_cmds``, the LAVA test shell) use it;
* the parent of a multi job makes its key on the coordinator that runs its
  reserve or test step and publishes the public half in its record; each
  child's worker authorises it on its device when told
  (:attr:`~convoy.config.lifecycle.Signal.AUTHORIZE`), and the parent's
  commands, its guests' test shells and the copying of reserved users' keys
  use it.  A step re-run on another coordinator makes a key of its own
  there and has it authorised the same way;
* what each device was told to trust is recorded in its child's record
  (``job_key``, ``parent_key``, ``reserved_keys``: ``type base64`` lines),
  so cleanup — re-run anywhere after a crash — revokes exactly that, on
  every connector (one that resets the device's home at cleanup needs no
  revoking).
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convoy.config.lifecycle import FINAL_STATES, Signal
from convoy.connectors.base import Connector
from convoy.connectors.sshkeys import ensure_key_pair, fingerprint, key_blob, public_key_path
from convoy.errors import ConvoyError

__all__ = ["KEY_DIR", "authorize_job_key", "authorize_parent_key", "forget_job_key", "job_key", "parent_key",
           "recorded_keys", "revoke_job_keys"]

KEY_DIR = ".convoy-key"
KEY_NAME = "id_ed25519"
#: how long a parent step waits for its children's workers to authorise its key
AUTHORIZE_TIMEOUT_SECONDS = 120.0
#: the record fields holding what a device was told to trust (``type base64`` lines)
TRUST_FIELDS = ("job_key", "parent_key", "reserved_keys")

Log = Callable[[str], None]


def job_key(job_dir: Path, job_id: str) -> Path:
    """The job's private key on this host (made once, 0600 in a 0700 directory of the job's)."""
    return ensure_key_pair(job_dir / KEY_DIR, KEY_NAME, f"convoy-job-{job_id}")


def public_line(key: Path) -> str:
    return public_key_path(key).read_text().strip()


def forget_job_key(job_dir: Path) -> None:
    """Delete the job's key pair on this host (its device no longer trusts it)."""
    shutil.rmtree(job_dir / KEY_DIR, ignore_errors=True)


def recorded_keys(record: dict[str, Any]) -> list[str]:
    """Every key a device job's record says its device was told to trust (``type base64``), each once."""
    found: list[str] = []
    for name in TRUST_FIELDS:
        value = record.get(name)
        for line in value if isinstance(value, list) else [value] if value else []:
            blob = key_blob(str(line))
            if blob and blob not in found:
                found.append(blob)
    return found


def authorize_job_key(store: Any, job_id: str, job_dir: Path, connector: Connector, log: Log) -> Path:
    """Make the device job's key, record it, then have the connector authorise it; the private key's path.

    Recorded first: a crash between the two still has cleanup revoke it.
    """
    key = job_key(job_dir, job_id)
    line = public_line(key)
    store.set_fields(job_id, job_key=key_blob(line))
    connector.authorize([line], log)
    log(f"the job's own key {fingerprint(line)} is authorised on {connector.device.name}")
    return key


def authorize_parent_key(store: Any, child_id: str, parent_id: str, connector: Connector, log: Log) -> None:
    """A child's worker, told :attr:`Signal.AUTHORIZE`: trust the parent's published key on this device."""
    line = str(store.get(parent_id).get("ssh_public_key") or "")
    if not line:
        log("asked to authorise the parent's key, but the parent published none")
        return
    store.set_fields(child_id, parent_key=key_blob(line))
    connector.authorize([line], log)
    store.set_fields(child_id, parent_key_fingerprint=fingerprint(line))
    log(f"the parent's key {fingerprint(line)} is authorised on {connector.device.name}")  # wakes the parent


def parent_key(store: Any, parent_id: str, parent_dir: Path, out: Log,
               timeout: float = AUTHORIZE_TIMEOUT_SECONDS) -> Path:
    """The parent's private key on this coordinator, trusted by every device of the job.

    The first step to need it here makes it, publishes its public half and
    asks each device child's worker to authorise it, waiting until all have
    (or one ended).  Raises :class:`ConvoyError` naming the devices that did not.
    """
    key = job_key(parent_dir, parent_id)
    line = public_line(key)
    mine = fingerprint(line)
    children = [c for c in store.children(parent_id)
                if (store.get(c).get("device_info") or {}).get("device_ip")]

    def pending() -> list[str]:
        rows = store.fields(children, "parent_key_fingerprint", "state")
        return [c for c, row in zip(children, rows, strict=True)
                if row.get("parent_key_fingerprint") != mine and row.get("state") not in FINAL_STATES]

    waiting = pending()
    if not waiting:
        return key
    store.set_fields(parent_id, ssh_public_key=line)
    out(f"asking {len(waiting)} device(s) to trust the job's key {mine}")
    for child in waiting:
        store.signal(child, Signal.AUTHORIZE)
    started = time.monotonic()
    if not store.wait_until(children, lambda: not pending(), timeout):
        names = ", ".join(str(store.get(c).get("device") or c) for c in pending())
        raise ConvoyError(f"the job's key {mine} was not authorised within {timeout:g}s on: {names}")
    out(f"every device trusts the job's key ({time.monotonic() - started:.1f}s)")
    return key


def revoke_job_keys(store: Any, job_id: str, connector: Connector, log: Log) -> None:
    """Cleanup: the device stops trusting every key recorded for it (the job's, its parent's, reserved users')."""
    connector.revoke(recorded_keys(store.get(job_id)), log)
