"""A job's LAVA test actions, from overlay to outcome: what a device's worker (and a guest) calls.

:func:`run_lava_tests` builds the overlay in the job's directory, copies it
to the device and runs each test action in its own SSH session
(:class:`~convoy.tasks.run.testshell.session.TestShell`), within the action's
``timeout`` and the job's deadline; the first action that fails by LAVA's
rules ends the test (its status is the phase's).  Definitions ``from: git``
or ``url`` are fetched first, here on the device's host
(:mod:`~convoy.tasks.run.testshell.fetch`, cached under the worker's state
dir), and only for a device that is a sandbox: a peer's definition does not
run on a device whose files and network are its host's.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from convoy.config.settings import load_settings
from convoy.tasks.run.output import OutputForwarder
from convoy.tasks.run.testshell.fetch import FetchError, resolve_definitions, uses_peer_definitions
from convoy.tasks.run.testshell.overlay import build_overlay
from convoy.tasks.run.testshell.session import Relay, TestShell

__all__ = ["device_environment", "make_relay", "run_lava_tests"]


def device_environment(job: Mapping[str, Any], *, sandboxed: bool, device_ip: str | None) -> dict[str, str]:
    """The variables the test shell sets on the device: the job's ``test_data.env``, the MultiNode cache
    path it chose, and on a device that is no machine of its own, that it is not (``CONVOY_SHARED_HOST``),
    its address (``lava-echo-ipv4``) and a private cache file.  Nothing secret: no Redis URL, no password, no key.
    """
    test_data = job.get("test_data") or {}
    env = {str(k): str(v) for k, v in (test_data.get("env") or {}).items()}
    cache = (job.get("multinode") or {}).get("cache_file")
    if cache:
        env["LAVA_MULTI_NODE_CACHE"] = str(cache)
    if not sandboxed:
        env["CONVOY_SHARED_HOST"] = "1"  # lava-install-packages installs nothing on the host
        if device_ip:
            env["CONVOY_DEVICE_IP"] = device_ip
        if not cache:
            env["CONVOY_PRIVATE_CACHE"] = "1"
    return env


def make_relay(client: Any, *, group_id: str | None, job_id: str, role: str | None, timeout: float | None,
               cancel: threading.Event) -> Relay | None:
    """The job's way to its MultiNode group (the worker's relay); None for a job in no group."""
    if not group_id:
        return None
    from convoy.tasks.run.relay import MultiNodeRelay

    return MultiNodeRelay(client, group_id=group_id, job_id=job_id, role=role, timeout=timeout, cancel=cancel)


def run_lava_tests(lava_tests: Sequence[Mapping[str, Any]], *, job_id: str, work_dir: Path, ssh: Path, host: str,
                   environment: Mapping[str, str], out: Callable[[str], None],
                   record: Callable[[dict[str, Any]], None], relay: Relay | None, cancel: threading.Event,
                   deadline: float | None, global_timeout: float | None = None,
                   on_start: Callable[[int], None] | None = None, output_timeout: float | None = None,
                   sandboxed: bool = False, cache_dir: Path | None = None) -> int:
    """Run every test action on the device at ``host`` (the job's ssh config names it); the phase's status.

    ``sandboxed``: the device is a machine of its own (``device_info["sandboxed"]``), which definitions
    fetched from git or a URL need; ``cache_dir``: where fetched repositories are kept (default: the
    worker's ``<state_dir>/cache``).
    """
    if uses_peer_definitions(lava_tests):
        if not sandboxed:
            out(f"*** device {host} is not a sandbox: test definitions from git or url (written by others) run "
                "only on sandboxed devices ***\n")
            return 1
        out("fetching the test definitions from git and url on the device's host\n")
        try:
            settings = load_settings()
            lava_tests = resolve_definitions(lava_tests, cache_dir=cache_dir or settings.state_dir / "cache",
                                             work_dir=work_dir / "lava-definitions",
                                             file_dirs=settings.definition_dirs)
        except FetchError as exc:
            out(f"*** {exc} ***\n")
            return 1
    overlay = build_overlay(work_dir / "lava-overlay", job_id, lava_tests, environment)
    forwarder = OutputForwarder(out, name="lava_tests")  # the session is read on: output never waits for Redis
    try:
        shell = TestShell(ssh=ssh, host=host, overlay=overlay, out=forwarder.write, record=record, relay=relay,
                          cancel=cancel, on_start=on_start, output_timeout=output_timeout)
        forwarder.write(f"copying the test overlay to ~/{overlay.name} on {host}\n")
        shell.install()
        return _run_actions(shell, lava_tests, overlay.suites, host, deadline, global_timeout)
    finally:
        forwarder.close()


def _run_actions(shell: TestShell, lava_tests: Sequence[Mapping[str, Any]], suites: list[list[str]], host: str,
                 deadline: float | None, global_timeout: float | None) -> int:
    out = shell.out
    for index, action in enumerate(lava_tests):
        limit, until = global_timeout, deadline
        timeout = action.get("timeout")
        if timeout and (until is None or time.time() + float(timeout) < until):
            limit, until = float(timeout), time.time() + float(timeout)
        out(f"test action {index} ({', '.join(suites[index]) or 'no definitions'}) on {host}\n")
        result = shell.run_action(index, until, limit)
        if result.status != 0:
            return result.status
    return 0
