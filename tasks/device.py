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
import sys
from pathlib import Path
from typing import Any, Callable

from celery import Task

from convoy.tasks.celery import app
from convoy.config.settings import load_settings
from convoy.tasks import canvas
from convoy.tasks.cancel import ALLOCATING, UNABLE_TO_ALLOCATE, abort_allocation
from convoy.coordinator.state.connection import get_store
from convoy.config.lifecycle import FINAL_STATES
from convoy.errors import ConvoyError, DeviceError
from convoy.tasks import events as states
from convoy.coordinator.state.control import ControlWatcher
from convoy.tasks.run.runtime import DeviceRuntime, current_device
from convoy.coordinator.state.devices import claim_device, release_device
from convoy.tasks.run.delayed_start import start_request, wait_for_start
from convoy.tasks.run.multinode_env import multinode_env, multinode_files
from convoy.tasks.run.output import patient_writer, patiently
from convoy.tasks.run.script import STOPPED_EXIT_CODE, run_script
from convoy.tasks.run.ssh import write_ssh_setup

log = logging.getLogger(__name__)

#: how often a holding child re-checks that its parent still lives (a safety net, not the mechanism)
HOLD_CHECK_SECONDS = 60.0


class DeviceJob:
    """One job on this worker's device, from start to release."""

    def __init__(self, task: Task, job_id: str, runtime: DeviceRuntime) -> None:
        self.task = task
        self.job_id = job_id
        self.runtime = runtime
        self.settings = load_settings()
        self.store = get_store(self.settings)
        self.record = self.store.get(job_id)
        self.job: dict[str, Any] = self.record["document"]
        self.dir = runtime.state_dir / "jobs" / job_id
        self.parent_id: str | None = self.record.get("parent_job_id")
        self.control: ControlWatcher | None = None
        #: what provisioning reported (device_ip, ...), kept for the test phase and the chord
        self.device_info: dict[str, Any] = {}
        self.failed = False

    # --- helpers -----------------------------------------------------------------
    def logger(self, phase: str) -> Callable[[str], None]:
        """Lines to the phase's output; a Redis restart delays them (in order), never drops them silently."""
        return patient_writer(self.store, self.job_id, phase)

    @property
    def cancelled(self) -> bool:
        return self.control is not None and self.control.received("cancel")

    def phase(self, name: str, body: Callable[[], int]) -> int:
        """Run one phase: record its start, output, exit code and end."""
        self.store.start_phase(self.job_id, name)
        states.announce(self.task, name)
        try:
            status = body()
        except ConvoyError as exc:
            self.logger(name)(str(exc))
            status = 1
        except Exception as exc:  # a connector bug must not leave the device held
            log.exception("phase %s of job %s failed", name, self.job_id)
            self.logger(name)(f"internal error in {name}: {exc!r}")
            status = 1
        patiently(self.store.end_phase, self.job_id, name, status)  # a Redis restart delays, never strands
        if status != 0:
            self.failed = True
        return status

    def start(self) -> bool:
        changed, previous = self.store.transition(
            self.job_id, "provision", allowed_from=["waiting"], device=self.runtime.name, host=self.runtime.host)
        if not changed:
            log.info("job %s is %s; not starting it", self.job_id, previous or "unknown")
            return False
        claim_device(self.store.r, self.runtime.name, self.job_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        return True

    # --- phases ------------------------------------------------------------------
    def provision(self) -> int:
        def body() -> int:
            out = self.logger("provision")
            out(f"provisioning {self.runtime.name} ({self.runtime.device.connector})")
            info = self.runtime.connector.provision(
                self.job.get("provision_data") or {}, self.control.cancel_event, out)
            if self.cancelled:
                out("provisioning stopped: job cancelled")
                return STOPPED_EXIT_CODE
            self.store.set_fields(self.job_id, device_info=info)
            self.device_info = info
            out(f"device {self.runtime.name} ready at {info.get('device_ip')}")
            return 0

        return self.phase("provision", body)

    def test(self) -> int:
        script = (self.job.get("test_data") or {}).get("test_cmds")
        if not script:
            return 0
        self.store.transition(self.job_id, "test")

        def body() -> int:
            env = self.test_env()
            spec = start_request(self.job)
            if spec and self.parent_id:
                status = wait_for_start(self.store.r, self.parent_id, spec, self.logger("test"))
                if status != 0:
                    return status
            return run_script(script, cwd=self.dir, env=env, on_output=self.logger("test"),
                              cancel=self.control.cancel_event, timeout=self.job.get("global_timeout"),
                              private_files=multinode_files(self.dir, env),
                              on_start=lambda pid: self.store.set_fields(self.job_id, script_pgid=pid))

        status = self.phase("test", body)
        self.store.set_fields(self.job_id, script_pgid="")  # ended: nothing for a recovery to kill
        if status != 0 and self.parent_id:
            self.fail_member("was cancelled" if self.cancelled else f"failed: test_cmds exited {status}")
        return status

    def fail_member(self, reason: str) -> None:
        """Tell the MultiNode group this member is gone, so no member waits for it."""
        from convoy.coordinator.multinode.group import fail_member

        fail_member(self.store.r, self.parent_id, self.job_id, reason)

    def test_env(self) -> dict[str, str]:
        info = self.device_info
        target = self.runtime.connector.ssh_target()
        bin_dir = write_ssh_setup(self.dir, self.runtime.agent_key, [target])
        env = dict(os.environ)
        env.pop("CONVOY_DEVICE_JSON", None)
        test_data = self.job.get("test_data") or {}
        env.update({str(k): str(v) for k, v in (test_data.get("env") or {}).items()})
        env.update({
            "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]),
            "DEVICE_IP": str(info.get("device_ip", target.host)),
            "CONVOY_JOB_ID": self.job_id,
            "CONVOY_REDIS_URL": self.settings.redis_url,
            "TEST_USERNAME": test_data.get("test_username", "ubuntu"),
        })
        if self.parent_id:
            env["CONVOY_GROUP_ID"] = self.parent_id
            env["CONVOY_ROLE"] = self.record.get("role") or self.job["job_queue"]
            env.update(multinode_env(self.job))  # children inherit the group's settings unless they set their own
        return env

    def cleanup(self) -> int:
        self.store.transition(self.job_id, "cleanup")

        def body() -> int:
            out = self.logger("cleanup")
            self.runtime.connector.cleanup(out)
            out(f"device {self.runtime.name} cleaned up")
            return 0

        try:
            return self.phase("cleanup", body)
        finally:
            release_device(self.store.r, self.runtime.name, self.job_id)
            shutil.rmtree(self.dir / ".convoy-ssh", ignore_errors=True)

    def finish(self, final_state: str) -> None:
        cancel_requested = bool(patiently(self.store.get, self.job_id).get("cancel_requested"))
        if cancel_requested and not self.parent_id:
            outcome = "cancelled"
        elif self.failed:
            outcome = "fail"
        else:  # a child cancelled while it held its device (by a user, or an aborted allocation) did not pass
            outcome = "cancelled" if cancel_requested else "pass"
        patiently(self.store.transition, self.job_id, final_state, outcome=outcome)
        states.announce(self.task, final_state)

    # --- the two job shapes ------------------------------------------------------
    def run_single(self) -> dict[str, Any]:
        if not self.start():
            return {"job_id": self.job_id, "skipped": True}
        with ControlWatcher(self.store.r, self.job_id) as self.control:
            try:
                if self.provision() == 0 and not self.cancelled:
                    self.test()
            finally:
                self.cleanup()
                self.finish("cancelled" if self.cancelled else "complete")
        return {"job_id": self.job_id, "state": self.store.state(self.job_id)}

    def run_child(self) -> dict[str, Any] | None:
        if not self.start():
            self.task.request.chord = None  # not allocated: never counts towards the chord
            return None
        watcher = ControlWatcher(self.store.r, self.job_id)
        # a cancelled member fails every MultiNode wait of its group at once, its own included; the
        # callback is in place before the watcher reads, so a cancel sent before the task began counts too
        watcher.on_signal(lambda name: name == "cancel" and self.fail_member("was cancelled"))
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
                self.finish("cancelled")

    def allocated(self) -> dict[str, Any]:
        self.store.transition(self.job_id, "allocated", allowed_from=["provision"])
        states.report_allocated(self.task, {"job_id": self.job_id, "device_info": self.device_info})
        self.logger("provision")("allocated; holding the device for the parent job")
        return self.device_info

    def hold(self) -> None:
        """Hold the device until the parent releases it, running test_cmds when told to."""
        assert self.control is not None
        while True:
            signal = self.control.wait_any(("cancel", "release", "test"), timeout=HOLD_CHECK_SECONDS)
            if signal in ("cancel", "release"):
                return
            if signal == "test":
                self.test()
                self.store.transition(self.job_id, "allocated", allowed_from=["test"])
                self.control.clear("test")
                continue
            if self.parent_id and self.store.state(self.parent_id) in FINAL_STATES:
                self.logger("cleanup")("parent job ended without releasing this device; releasing it")
                return

    def _abort_parent(self) -> None:
        if self.parent_id and self.store.state(self.parent_id) in ALLOCATING:
            abort_allocation(self.store, self.parent_id, UNABLE_TO_ALLOCATE, self.settings)


@app.task(bind=True, name=canvas.RUN_JOB, acks_late=True)
def run_job(self: Task, job_id: str) -> dict[str, Any]:
    """A single-device job on this worker's device."""
    return DeviceJob(self, job_id, current_device()).run_single()


@app.task(bind=True, name=canvas.CHILD_JOB, acks_late=True)
def child_job(self: Task, job_id: str) -> dict[str, Any] | None:
    """One device of a multi job: allocate, hold, test on request, clean up."""
    return DeviceJob(self, job_id, current_device()).run_child()


__all__ = ["run_job", "child_job", "DeviceJob", "DeviceError"]
