"""Secondary connections: roles that need no device (LAVA's ``connection: ssh``).

A guest's LAVA test definitions (``test_data.lava_tests``) run as LAVA runs
them: on its ``host_role``'s device, over the guest's own SSH session, in
the test shell (:mod:`convoy.tasks.run.testshell`).  A guest's Testflinger
``test_cmds`` run on the coordinator against that device (``DEVICE_IP``;
``ssh ubuntu@$DEVICE_IP`` just works), with the MultiNode commands on PATH.
Either usually starts after a delayed start, once the host has said
``lava_start``.  A guest is a child job of its own: it records its test
phase and ends ``cancelled`` like every child.
"""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convoy.config.lifecycle import JobState, Phase
from convoy.config.outcome import phase_outcome
from convoy.coordinator.state.jobs import JobStore
from convoy.errors import ConvoyError
from convoy.tasks.run.env import multinode_files, multinode_timeout, parent_dir, parent_test_env
from convoy.tasks.run.delayed_start import start_request, wait_for_start
from convoy.tasks.run.phase import PhaseRun
from convoy.tasks.run.relay import relay_env
from convoy.tasks.run.script import run_script
from convoy.tasks.run.testshell.runner import device_environment, make_relay, run_lava_tests


def host_device_info(store: JobStore, parent_id: str, host_role: str) -> dict[str, Any] | None:
    """The device_info of the first allocated device of ``host_role``."""
    for row in store.fields(store.children(parent_id), "role", "device_info"):
        if row["role"] == host_role and row["device_info"]:
            return dict(row["device_info"])
    return None


def host_device_ip(store: JobStore, parent_id: str, host_role: str) -> str | None:
    """The address of the first allocated device of ``host_role``."""
    info = host_device_info(store, parent_id, host_role)
    return None if info is None else str(info.get("device_ip"))


def guest_test_shell(store: JobStore, guest_id: str, job: dict[str, Any], *, work_dir: Path, host: dict[str, Any],
                     role: str, parent_id: str, cancel: threading.Event, out: Callable[[str], None]) -> int:
    """A guest's LAVA test actions, on its host role's device over the guest's own SSH session (as LAVA does)."""
    from convoy.coordinator.state.testcases import record_case

    host_ip = str(host["device_ip"])
    sandboxed = bool(host.get("sandboxed"))
    relay = make_relay(store.client, group_id=parent_id, job_id=guest_id, role=role,
                       timeout=multinode_timeout(job), cancel=cancel)
    limit = job.get("global_timeout")
    try:
        return run_lava_tests(
            job["test_data"]["lava_tests"], job_id=guest_id, work_dir=work_dir,
            ssh=work_dir / ".convoy-ssh" / "bin" / "ssh", host=host_ip,
            environment=device_environment(job, sandboxed=sandboxed, device_ip=host_ip), out=out,
            record=lambda case: record_case(store.client, guest_id, case), relay=relay, cancel=cancel,
            deadline=time.time() + float(limit) if limit else None, global_timeout=limit,
            output_timeout=job.get("output_timeout"), sandboxed=sandboxed)
    except (ConvoyError, OSError, subprocess.SubprocessError) as exc:  # the guest's test fails, saying why
        out(f"the test shell on {host_ip} failed: {exc}\n")
        return 1


def run_guest(store: JobStore, parent_id: str, guest_id: str, cancel: threading.Event) -> int:
    """Run one guest's test_cmds to the end; return their exit code."""
    record = store.get(guest_id, with_secrets=True)  # its commands get the secrets
    job: dict[str, Any] = record["document"]
    test = PhaseRun(store, guest_id, Phase.TEST)  # no task of its own: nothing to announce
    if not test.transition(JobState.TEST, allowed_from=[JobState.WAITING]):
        return 1
    out = test.out
    test.start()
    work_dir = parent_dir(parent_id) / f"guest-{guest_id}"
    work_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        env = parent_test_env(store, parent_id, job, work_dir, out=out)
    except ConvoyError as exc:
        out(f"*** {exc} ***")
        env, status = {}, 1
    host = host_device_info(store, parent_id, job["host_role"])
    host_ip = None if host is None else str(host.get("device_ip"))
    env.update({"CONVOY_JOB_ID": guest_id, "CONVOY_ROLE": record.get("role") or "guest",
                "DEVICE_IP": host_ip or ""})
    if status == 0 and host_ip is None:
        out(f"no device of host role {job['host_role']!r} is allocated")
        status = 1
    spec = start_request(job)
    if status == 0 and spec:
        status = wait_for_start(store.client, parent_id, spec, out)
    if status == 0 and (job.get("test_data") or {}).get("lava_tests") and host is not None:
        status = guest_test_shell(store, guest_id, job, work_dir=work_dir, host=host, role=env["CONVOY_ROLE"],
                                  parent_id=parent_id, cancel=cancel, out=test.write)
    elif status == 0:
        with relay_env(store.client, work_dir, group_id=parent_id, job_id=guest_id, role=env["CONVOY_ROLE"],
                       timeout=multinode_timeout(job), cancel=cancel) as relay:
            status = run_script((job.get("test_data") or {}).get("test_cmds") or "true", cwd=work_dir,
                                env={**env, **relay}, on_output=test.write, cancel=cancel,
                                output_timeout=job.get("output_timeout"), private_files=multinode_files(work_dir, env),
                                job=parent_id, job_dir=parent_dir(parent_id))  # the parent's uid: its key is theirs
    test.end(status)
    if test.failed:
        from convoy.coordinator.multinode.group import fail_member

        fail_member(store.client, parent_id, guest_id, f"failed: its test ended {status}")
    cleanup = PhaseRun(store, guest_id, Phase.CLEANUP)
    cleanup.transition(JobState.CLEANUP)
    cleanup.start()
    cleanup.out("no device to clean up (secondary connection)")
    cleanup.end(0)
    cleanup.conclude(JobState.CANCELLED, outcome=phase_outcome(status))
    return status


def start_guest(store: JobStore, parent_id: str, guest_id: str, cancel: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run_guest, args=(store, parent_id, guest_id, cancel),
                              name=f"guest-{guest_id[:8]}", daemon=True)
    thread.start()
    return thread
