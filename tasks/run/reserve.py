"""The reserve phase of a multi job: import keys once, copy them everywhere, hold.

Testflinger's reservation, done better:

* every key id is imported once (not once per device), with retries and a
  check that what came back are SSH public keys;
* the keys go to all devices at once (Fabric, one thread per device) in a
  single idempotent command per device, authenticated with the agent key;
* a device that cannot take the keys is reported and the others stay
  reserved (Testflinger's "graceful degradation"); only a failed import, a
  missing ``job_list.json`` or a failure on every device fails the phase;
* the hold holds no thread: :func:`run_reservation` returns once the keys
  are in place and the caller sets the reservation's durable deadline, which
  the scheduler fires at ``reserve_data.timeout`` (``convoy release``,
  ``convoy reserve extend`` and ``convoy cancel`` move or end it).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from convoy.config.schemas import DEFAULT_RESERVE_TIMEOUT, DEFAULT_TEST_USERNAME
from convoy.config.settings import Settings, load_settings
from convoy.errors import KeyImportError
from convoy.tasks.run.keyimport import PublicKey, RetryPolicy, import_keys

log = logging.getLogger(__name__)

Out = Callable[[str], None]

#: seconds to connect to (and authenticate on) one device, and to run the copy there
CONNECT_TIMEOUT = 15
COMMAND_TIMEOUT = 60
#: threads copying at once (one per device up to this)
MAX_COPY_THREADS = 64


@dataclass(frozen=True)
class Device:
    """A reserved device as the user reaches it: ``username@host -p port``."""

    job_id: str
    host: str
    port: int = 22
    username: str = DEFAULT_TEST_USERNAME

    @property
    def address(self) -> str:
        return f"{self.username}@{self.host}"

    @property
    def hint(self) -> str:
        """``ubuntu@10.0.0.5``, with ``(ssh -p 2222)`` when the port is not 22."""
        return self.address if self.port == 22 else f"{self.address} (ssh -p {self.port})"


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def reservation_banner(devices: Sequence[Device], timeout: float, parent_id: str, now: datetime,
                       failed: Sequence[Device] = ()) -> str:
    """The text users read once their devices are reserved (Testflinger's layout, convoy's words).

    ``failed`` devices are listed too, marked: the user can still see them,
    but their keys were not copied.
    """
    now = now.astimezone(timezone.utc)
    lines = ["*** CONVOY SYSTEMS RESERVED ***", "You can now connect to the following devices:"]
    for device in devices:
        mark = " -- keys NOT copied (see above)" if device in failed else ""
        lines.append(device.hint + mark)
    lines += [
        f"Current time:           {now.isoformat(timespec='seconds')}",
        f"Reservation expires at: {(now + timedelta(seconds=timeout)).isoformat(timespec='seconds')}",
        f"Reservation will automatically timeout in {_seconds_text(timeout)} seconds",
        f"To end the reservation sooner use: convoy release {parent_id}",
        f"To extend it: convoy reserve extend {parent_id} DURATION",
    ]
    return "\n".join(lines) + "\n"


def reserve_timeout(job: dict[str, Any]) -> float:
    """``reserve_data.timeout`` in seconds (normalised by the job loader; strings still accepted)."""
    value = (job.get("reserve_data") or {}).get("timeout", DEFAULT_RESERVE_TIMEOUT)
    if isinstance(value, str):
        from convoy.config.durations import parse_duration

        return parse_duration(value, field="reserve_data.timeout")
    return float(value)


def reserve_devices(store: Any, parent_id: str, job: dict[str, Any]) -> list[Device]:
    """The children's devices in ``provision_data.jobs`` order, as ``test_username`` reaches them."""
    username = (job.get("test_data") or {}).get("test_username") or DEFAULT_TEST_USERNAME
    devices = []
    for child_id in store.children(parent_id):
        info = store.get(child_id).get("device_info") or {}
        devices.append(Device(job_id=child_id, host=str(info.get("device_ip", "")),
                              port=int(info.get("ssh_port") or 22), username=username))
    return devices


# --- copying -----------------------------------------------------------------------------------

def copy_keys(device: Device, keys: Sequence[PublicKey], agent_key: Path, *,
              connect_timeout: float = CONNECT_TIMEOUT, command_timeout: float = COMMAND_TIMEOUT) -> int:
    """Add ``keys`` to the device's ``authorized_keys`` over SSH; return how many were new.

    Raises whatever the connection raises, or :class:`RuntimeError` if the
    command fails on the device.
    """
    from convoy.connectors.ssh import add_authorized_keys  # Fabric: only the coordinator pays for it

    if not device.host:
        raise RuntimeError("the device has no device_ip")
    return add_authorized_keys(device.host, device.port, device.username, agent_key, [k.line for k in keys],
                               connect_timeout=connect_timeout, command_timeout=command_timeout)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if not text:
        return name
    return text if isinstance(exc, RuntimeError) else f"{text} ({name})"


def copy_to_all(devices: Sequence[Device], keys: Sequence[PublicKey], agent_key: Path, out: Out,
                copy: Callable[..., int] | None = None) -> list[Device]:
    """Copy ``keys`` to every device at once; report each device; return those that failed."""
    copy = copy or copy_keys

    def one(device: Device) -> Device | None:
        try:
            added = copy(device, keys, agent_key)
        except Exception as exc:  # any failure of one device is that device's, reported below
            log.info("copying keys to %s failed", device.address, exc_info=True)
            out(f"could not copy keys to {device.address}: {_reason(exc)}")
            return device
        out(f"copied keys to {device.address} ({added} new)")
        return None

    if not devices:
        return []
    with ThreadPoolExecutor(max_workers=min(len(devices), MAX_COPY_THREADS),
                            thread_name_prefix="reserve-copy") as pool:
        return [d for d in pool.map(one, devices) if d is not None]


# --- the phase -----------------------------------------------------------------------------------

def run_reservation(store: Any, parent_id: str, job: dict[str, Any], control: Any, out: Out, *,
                    settings: Settings | None = None, policy: RetryPolicy = RetryPolicy(),
                    on_reserved: Callable[[list[Device], float], None] | None = None) -> int:
    """Set up the reservation: the exit status (0 reserved, 1 failed); ``out`` gets the phase output.

    ``on_reserved(devices, seconds)`` is called once the keys are in place: the caller holds the
    devices that long (a durable deadline, not a waiting thread).  Never raises: an unexpected error
    fails the phase (and cleanup still runs).
    """
    try:
        return _run(store, parent_id, job, control, out, settings or load_settings(), policy, on_reserved)
    except Exception as exc:  # the chain must go on to cleanup whatever happens here
        log.exception("reserve phase of %s failed", parent_id)
        out(f"reserve phase failed: {_reason(exc)}")
        return 1


def _run(store: Any, parent_id: str, job: dict[str, Any], control: Any, out: Out, settings: Settings,
         policy: RetryPolicy, on_reserved: Callable[[list[Device], float], None] | None) -> int:
    from convoy.connectors.sshkeys import key_blob
    from convoy.tasks.run.env import parent_dir
    from convoy.tasks.run.jobkeys import parent_key

    job_list = parent_dir(parent_id) / "job_list.json"
    if not job_list.is_file():
        out(f"Missing job_list.json ({job_list}): the devices were never recorded as allocated; "
            "the reserve phase fails")
        return 1
    devices = reserve_devices(store, parent_id, job)
    if not devices:
        out("no devices to reserve; the reserve phase fails")
        return 1
    timeout = reserve_timeout(job)
    if timeout > settings.max_reservation:
        out(f"reserve_data.timeout {timeout:g}s exceeds this deployment's maximum reservation; "
            f"reserving for {settings.max_reservation:g}s (CONVOY_MAX_RESERVATION)")
        timeout = settings.max_reservation
    cancel: threading.Event = control.cancel_event

    key_ids = list((job.get("reserve_data") or {}).get("ssh_keys") or [])
    out(f"importing SSH keys: {', '.join(key_ids)}")
    try:
        keys = import_keys(key_ids, settings.github_keys_url, settings.launchpad_keys_url, policy,
                           cancel=cancel, log=out)
    except KeyImportError as exc:
        if cancel.is_set():
            out("reservation ended early by cancel")
            return 0
        out(f"could not import SSH key {exc.key_id}: {exc.reason}")
        out("no keys were copied; the reserve phase fails")
        return 1

    out(f"copying {len(keys)} key(s) to {len(devices)} device(s)")
    for device in devices:  # recorded first: each device's cleanup removes them, even after a crash
        store.set_fields(device.job_id, reserved_keys=[key_blob(k.line) for k in keys])
    failed = copy_to_all(devices, keys, parent_key(store, parent_id, parent_dir(parent_id), out), out)
    if cancel.is_set():
        out("reservation ended early by cancel")
        return 0
    if len(failed) == len(devices):
        out(f"could not copy keys to any of the {len(devices)} device(s); the reserve phase fails")
        return 1
    if failed:
        out(f"{len(failed)} of {len(devices)} device(s) did not get the keys; the others stay reserved")

    out(reservation_banner(devices, timeout, parent_id, datetime.now(timezone.utc), failed))
    if on_reserved is not None:
        on_reserved([d for d in devices if d not in failed], timeout)
    return 0
