"""Device jobs: the tasks that run on a device's worker.

``run_job`` runs a single-device job: provision → test → cleanup.
``child_job`` runs one child of a multi job: provision, report the device as
allocated to the parent's chord, then hold the device (this worker, of
concurrency 1, takes no other job) until the parent says ``test``,
``release`` or ``cancel`` — waiting on its control stream, not polling.
Cleanup always runs and the device is always released.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from celery import Task

from convoy.tasks.celery import app
from convoy.config.settings import load_settings
from convoy.tasks import canvas
from convoy.tasks.cancel import ALLOCATING, UNABLE_TO_ALLOCATE, abort_allocation
from convoy.coordinator.state.connection import get_store
from convoy.config.lifecycle import FINAL_STATES, JobState, Phase, Signal
from convoy.config.outcome import device_job_outcome, final_state
from convoy.errors import DeviceError
from convoy.tasks import events as states
from convoy.coordinator.state.control import ControlWatcher
from convoy.tasks.run.runtime import DeviceRuntime, current_device
from convoy.coordinator.state.devices import (MAX_PROVISION_FAILURES, claim_device, provision_failed,
                                              provision_succeeded, release_device, unassign_device)
from convoy.tasks.run.artifacts import upload_artifacts
from convoy.tasks.run.delayed_start import start_request, wait_for_start
from convoy.tasks.run.env import command_env, multinode_files, multinode_timeout, secrets_of
from convoy.tasks.run.global_timeout import remaining, test_deadline
from convoy.tasks.run.jobkeys import (authorize_job_key, authorize_parent_key, forget_job_key, job_key,
                                      revoke_job_keys)
from convoy.tasks.run.output import patient_writer, patiently
from convoy.tasks.run.phase import PhaseRun
from convoy.tasks.run.relay import relay_env
from convoy.tasks.run.script import STOPPED_EXIT_CODE, run_script
from convoy.tasks.run.ssh import write_ssh_setup
from convoy.tasks.run.testshell.runner import device_environment, make_relay, run_lava_tests

log = logging.getLogger(__name__)

#: how often a holding child re-checks that its parent still lives (a safety net, not the mechanism)
HOLD_CHECK_SECONDS = 60.0

#: the job this worker runs now (a device worker runs one at a time), for its heartbeat's checks
_running: DeviceJob | None = None


def running_job() -> DeviceJob | None:
    """The job this device worker runs now, if any."""
    return _running


class DeviceJob:
    """One job on this worker's device, from start to release."""

    def __init__(self, task: Task, job_id: str, runtime: DeviceRuntime) -> None:
        self.task = task
        self.job_id = job_id
        self.runtime = runtime
        self.settings = load_settings()
        self.store = get_store(self.settings)
        self.record = self.store.get(job_id, with_secrets=True)  # its commands get the secrets
        self.job: dict[str, Any] = self.record["document"]
        self.dir = runtime.state_dir / "jobs" / job_id
        self.parent_id: str | None = self.record.get("parent_job_id")
        self.control: ControlWatcher | None = None
        #: what provisioning reported (device_ip, ...), kept for the test phase and the chord
        self.device_info: dict[str, Any] = {}
        #: every phase run so far, in order (a child may test more than once)
        self.runs: list[PhaseRun] = []

    # --- helpers -----------------------------------------------------------------
    def phase_run(self, phase: Phase) -> PhaseRun:
        """The bookkeeping of one phase of this job, announced as this task's state."""
        run = PhaseRun(self.store, self.job_id, phase, announce=states.announcer(self.task))
        self.runs.append(run)
        return run

    def logger(self, phase: Phase) -> Callable[[str], None]:
        """Lines to the phase's output; a Redis restart delays them (in order), never drops them silently."""
        return patient_writer(self.store, self.job_id, phase)

    @property
    def failed(self) -> bool:
        return any(run.failed for run in self.runs)

    @property
    def cancelled(self) -> bool:
        return self.control is not None and self.control.received(Signal.CANCEL)

    def forgotten(self) -> bool:
        """Redis no longer knows this job (it was emptied or replaced): say so everywhere left, and stop it.

        The job's record is gone, so the report goes where it still is known: this worker's log and the
        job's directory (``LOST``).  The job stops as if cancelled; its cleanup cleans the device.
        """
        if self.store.exists(self.job_id):
            return False
        report = (f"job {self.job_id} on device {self.runtime.name} was lost: Redis no longer knows it "
                  "(restarted without its data, or replaced); stopping it and cleaning the device")
        log.error(report)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "LOST").write_text(report + "\n")
        if self.control is not None:
            self.control.deliver(Signal.CANCEL)
        return True

    def start(self) -> bool:
        """Start the job the scheduler assigned to this device; False (and the device released) if it no longer may."""
        assigned = self.record.get("assigned_device")
        if assigned != self.runtime.name:  # moved to another device since (this one went offline meanwhile)
            log.info("job %s is assigned to %s, not %s; not starting it", self.job_id, assigned, self.runtime.name)
            return False
        changed, previous = self.store.transition(
            self.job_id, JobState.PROVISION, allowed_from=[JobState.WAITING], device=self.runtime.name,
            host=self.runtime.host)
        if not changed:
            log.info("job %s is %s; not starting it", self.job_id, previous or "unknown")
            unassign_device(self.store.client, self.runtime.name, self.job_id)  # assigned to it: free again
            return False
        claim_device(self.store.client, self.runtime.name, self.job_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        return True

    # --- phases ------------------------------------------------------------------
    def provision(self) -> int:
        run = self.phase_run(Phase.PROVISION)

        def body() -> int:
            out = run.out
            out(f"provisioning {self.runtime.name} ({self.runtime.device.connector})")
            info = self.runtime.connector.provision(
                self.job.get("provision_data") or {}, self.control.cancel_event, out)
            if self.cancelled:
                out("provisioning stopped: job cancelled")
                return STOPPED_EXIT_CODE
            self.device_info = info  # the connector's SSH target is known from here on
            authorize_job_key(self.store, self.job_id, self.dir, self.runtime.connector, out)
            provision_succeeded(self.store.client, self.runtime.name)
            self.store.set_fields(self.job_id, device_info=info)
            out(f"device {self.runtime.name} ready at {info.get('device_ip')}")
            return 0

        status = run.run(body)
        if status != 0 and not self.cancelled:
            self.count_failure(run)
        return status

    def count_failure(self, run: PhaseRun) -> None:
        """A failed provisioning counts towards taking the device out of service (three in a row)."""
        last = (self.store.output(self.job_id, Phase.PROVISION).strip().splitlines() or ["failed"])[-1]
        if provision_failed(self.store.client, self.runtime.name, last):
            run.out(f"device {self.runtime.name} goes to maintenance: provisioning failed "
                    f"{MAX_PROVISION_FAILURES} times in a row")

    def test(self) -> int:
        test_data = self.job.get("test_data") or {}
        script, lava_tests = test_data.get("test_cmds"), test_data.get("lava_tests")
        if not script and not lava_tests:
            return 0
        run = self.phase_run(Phase.TEST)
        run.transition(JobState.TEST)

        def body() -> int:
            env = self.test_env()
            spec = start_request(self.job)
            if spec and self.parent_id:
                status = wait_for_start(self.store.client, self.parent_id, spec, run.out)
                if status != 0:
                    return status
            deadline = test_deadline(self.store, self.job_id, self.job)
            status = 0
            if script:  # Testflinger's test_cmds, on the device's host
                with relay_env(self.store.client, self.dir, group_id=self.parent_id, job_id=self.job_id,
                               role=env.get("CONVOY_ROLE"), timeout=multinode_timeout(self.job),
                               cancel=self.control.stop_test_event) as relay:
                    status = run_script(script, cwd=self.dir, env={**env, **relay}, on_output=run.write,
                                        cancel=self.control.stop_test_event, timeout=remaining(deadline),
                                        timeout_limit=self.job.get("global_timeout"),
                                        output_timeout=self.job.get("output_timeout"),
                                        private_files=multinode_files(self.dir, env), job=self.job_id,
                                        on_start=lambda pid: self.store.set_fields(self.job_id, script_pgid=pid))
            if status == 0 and lava_tests:  # LAVA's test actions, on the device itself
                status = self.test_shell(run, lava_tests, deadline)
            return status

        status = run.run(body)
        self.store.set_fields(self.job_id, script_pgid="")  # ended: nothing for a recovery to kill
        if script:  # what test_cmds left in artifacts/ of their cwd (self.dir), stored before the job ends
            upload_artifacts(self.store, self.job_id, self.dir, self.settings.max_artifact_bytes, run.out)
        if status != 0 and self.parent_id:
            what = "test_cmds exited" if script else "its LAVA test actions ended"
            self.fail_member("was cancelled" if self.cancelled else f"failed: {what} {status}")
        return status

    def test_shell(self, run: PhaseRun, lava_tests: list[dict[str, Any]], deadline: float | None) -> int:
        """The job's LAVA test actions, run on the device itself by the test shell."""
        from convoy.coordinator.state.testcases import record_case

        assert self.control is not None
        target = self.runtime.connector.ssh_target()
        sandboxed = bool(self.device_info.get("sandboxed"))
        if not sandboxed:
            run.out(f"warning: device {self.runtime.name} is not a sandbox: its LAVA test definitions run on "
                    "its host's files and network")
        device_ip = str(self.device_info.get("device_ip", target.host))
        role = (self.record.get("role") or self.job["job_queue"]) if self.parent_id else None
        ssh_bin = write_ssh_setup(self.dir, job_key(self.dir, self.job_id), [target])
        relay = make_relay(self.store.client, group_id=self.parent_id, job_id=self.job_id, role=role,
                           timeout=multinode_timeout(self.job), cancel=self.control.stop_test_event)
        return run_lava_tests(
            lava_tests, job_id=self.job_id, work_dir=self.dir, ssh=ssh_bin / "ssh", host=target.host,
            environment=device_environment(self.job, sandboxed=sandboxed, device_ip=device_ip),
            out=run.write, record=lambda case: record_case(self.store.client, self.job_id, case), relay=relay,
            cancel=self.control.stop_test_event, deadline=deadline, global_timeout=self.job.get("global_timeout"),
            on_start=lambda pid: self.store.set_fields(self.job_id, script_pgid=pid),
            output_timeout=self.job.get("output_timeout"), sandboxed=sandboxed)

    def fail_member(self, reason: str) -> None:
        """Tell the MultiNode group this member is gone, so no member waits for it."""
        from convoy.coordinator.multinode.group import fail_member

        fail_member(self.store.client, self.parent_id, self.job_id, reason)

    def test_env(self) -> dict[str, str]:
        target = self.runtime.connector.ssh_target()
        return command_env(
            os.environ, self.job, job_id=self.job_id, work_dir=self.dir,
            secrets=secrets_of(self.settings.redis_url, self.settings.broker_url),
            ssh_bin=write_ssh_setup(self.dir, job_key(self.dir, self.job_id), [target]),
            device_ip=str(self.device_info.get("device_ip", target.host)), group_id=self.parent_id,
            role=(self.record.get("role") or self.job["job_queue"]) if self.parent_id else None)

    def cleanup(self) -> int:
        run = self.phase_run(Phase.CLEANUP)
        run.transition(JobState.CLEANUP)

        def body() -> int:
            out = run.out
            revoke_job_keys(self.store, self.job_id, self.runtime.connector, out)
            self.runtime.connector.cleanup(out)
            out(f"device {self.runtime.name} cleaned up")
            return 0

        try:
            return run.run(body)
        finally:
            release_device(self.store.client, self.runtime.name, self.job_id)
            shutil.rmtree(self.dir / ".convoy-ssh", ignore_errors=True)
            forget_job_key(self.dir)

    def finish(self, final: JobState) -> None:
        """End the job from its last phase run, with the outcome its phases and any cancel give."""
        if not patiently(self.store.exists, self.job_id):
            return  # lost with Redis's data: reported by forgotten(), nothing to record it in
        cancel_requested = bool(patiently(self.store.get, self.job_id).get("cancel_requested"))
        outcome = device_job_outcome(failed=self.failed, cancel_requested=cancel_requested,
                                     child=bool(self.parent_id))
        last = self.runs[-1] if self.runs else PhaseRun(self.store, self.job_id, Phase.CLEANUP,
                                                         announce=states.announcer(self.task))
        last.conclude(final, outcome=outcome)

    # --- the two job shapes ------------------------------------------------------
    def run_single(self) -> dict[str, Any]:
        if not self.start():
            return {"job_id": self.job_id, "skipped": True}
        with ControlWatcher(self.store.client, self.job_id) as self.control:
            try:
                if self.provision() == 0 and not self.cancelled:
                    self.test()
            finally:
                self.cleanup()
                self.finish(final_state(self.cancelled))
        return {"job_id": self.job_id, "state": self.store.state(self.job_id)}

    def run_child(self) -> dict[str, Any] | None:
        if not self.start():
            self.task.request.chord = None  # not allocated: never counts towards the chord
            return None
        watcher = ControlWatcher(self.store.client, self.job_id)
        # a cancelled member fails every MultiNode wait of its group at once, its own included; the
        # callback is in place before the watcher reads, so a cancel sent before the task began counts too
        watcher.on_signal(lambda name: name == Signal.CANCEL and self.fail_member("was cancelled"))
        with watcher as self.control:
            try:
                if self.provision() != 0 or self.cancelled:
                    self.task.request.chord = None
                    self._abort_parent()
                    return None
                info = self.allocated()
                self.hold()
                return info
            finally:
                self.cleanup()
                self.finish(JobState.CANCELLED)

    def allocated(self) -> dict[str, Any]:
        self.store.transition(self.job_id, JobState.ALLOCATED, allowed_from=[JobState.PROVISION])
        states.report_allocated(self.task, {"job_id": self.job_id, "device_info": self.device_info})
        self.logger(Phase.PROVISION)("allocated; holding the device for the parent job")
        return self.device_info

    def hold(self) -> None:
        """Hold the device until the parent releases it, running test_cmds when told to."""
        assert self.control is not None
        while True:
            signal = self.control.wait_any((Signal.CANCEL, Signal.RELEASE, Signal.TEST, Signal.AUTHORIZE),
                                           timeout=HOLD_CHECK_SECONDS)
            if signal in (Signal.CANCEL, Signal.RELEASE):
                return
            if signal == Signal.AUTHORIZE:
                self.control.clear(Signal.AUTHORIZE)
                self.authorize_parent_key()
                continue
            if signal == Signal.TEST:
                self.test()
                self.store.transition(self.job_id, JobState.ALLOCATED, allowed_from=[JobState.TEST])
                self.control.clear(Signal.TEST)
                continue
            if self.parent_id and self.store.state(self.parent_id) in FINAL_STATES:
                self.logger(Phase.CLEANUP)("parent job ended without releasing this device; releasing it")
                return

    def authorize_parent_key(self) -> None:
        """Have the device trust the parent's key (its commands, guests and reservations reach it so)."""
        assert self.parent_id is not None
        log_line = self.logger(Phase.PROVISION)
        try:
            authorize_parent_key(self.store, self.job_id, self.parent_id, self.runtime.connector, log_line)
        except DeviceError as exc:  # the parent's wait names this device; the reason is in its output
            log_line(f"could not authorise the parent's key: {exc}")

    def _abort_parent(self) -> None:
        if self.parent_id and self.store.state(self.parent_id) in ALLOCATING:
            abort_allocation(self.store, self.parent_id, UNABLE_TO_ALLOCATE, self.settings)


@app.task(bind=True, name=canvas.RUN_JOB, acks_late=True)
def run_job(self: Task, job_id: str) -> dict[str, Any]:
    """A single-device job on this worker's device."""
    with _running_as(DeviceJob(self, job_id, current_device())) as job:
        return job.run_single()


@app.task(bind=True, name=canvas.CHILD_JOB, acks_late=True)
def child_job(self: Task, job_id: str) -> dict[str, Any] | None:
    """One device of a multi job: allocate, hold, test on request, clean up."""
    with _running_as(DeviceJob(self, job_id, current_device())) as job:
        return job.run_child()


@contextmanager
def _running_as(job: DeviceJob) -> Iterator[DeviceJob]:
    global _running
    _running = job
    try:
        yield job
    finally:
        _running = None


__all__ = ["run_job", "child_job", "DeviceJob", "DeviceError"]
