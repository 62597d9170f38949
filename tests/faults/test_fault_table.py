"""The fault table: kill -9 one process at a time, in every phase of a multi job; nothing stays stranded.

One lab per module (``convoy.workers.embedded.lab``): a real ``convoy coordinator`` and a real
``convoy worker`` with two emulated devices, on the session's Redis.  Each
cell submits a two-device job, waits for the phase, SIGKILLs a process by
pid, and checks the job's end.  In every cell both devices are idle again
afterwards and no device phase ran twice.  The rows:

* the coordinator's Celery worker (its supervisor restarts it): the job
  goes on; only the parent's own test commands, which died with it, fail;
* a busy device's Celery worker (its supervisor restarts it): the job fails
  naming the device; the restarted worker cleans it;
* the ``convoy worker`` supervisor (its device workers die with it): the
  scheduler ends the job naming the devices; they are cleaned once the host
  is started again.

Also: a waiting job's ``allocation_timeout`` fires though the coordinator
that was running when it was submitted died, and a job cancelled while no
coordinator runs at all ends ``cancelled``, cleaned, once one runs again.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil
import pytest

from convoy.coordinator.api import submit_job
from convoy.workers.embedded.cluster import emulated_devices
from convoy.workers.embedded.lab import Lab
from helpers import CONVOY, unique_queue, wait_for
from keyserver import KeyServer

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120
#: a test command that waits (bounded) for the test's go-ahead file; exit 9 if it never comes
#: test commands waiting (bounded) for the test's go-ahead: a file ``go`` in their own job directory (a job's
#: commands see nothing else of the host's: let_go puts it there)
WAIT_FOR = "for i in $(seq 1200); do [ -e go ] && exit 0; sleep 0.1; done; exit 9"


def let_go(lab, *job_ids: str) -> None:
    for job_id in job_ids:
        (Path(lab.env["CONVOY_STATE_DIR"]) / "jobs" / job_id / "go").touch()


@pytest.fixture(scope="module")
def lab(cluster_redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fault-lab")
    key = root / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   stdin=subprocess.DEVNULL)
    queues = {unique_queue("fa"): 1, unique_queue("fb"): 1}
    devices = emulated_devices(queues, prefix=f"ft-{os.getpid()}",
                               extra_config={"provision_delay": 1.5, "cleanup_delay": 1.5})
    with KeyServer({("gh", "alice"): Path(f"{key}.pub").read_text()}) as keys:
        lab = Lab(cluster_redis_url, root, devices, env=keys.env())
        try:
            yield lab.start()
        finally:
            lab.stop()


@pytest.fixture
def fresh(lab: Lab):
    """Each cell starts, and must end, with every device idle; no device phase ran twice."""
    lab.wait_idle()
    submitted: list[str] = []
    yield submitted
    lab.wait_idle()
    for parent in submitted:
        for child in lab.store.children(parent):
            starts = lab.phase_starts(child)
            assert starts.get("provision", 0) <= 1 and starts.get("test", 0) <= 1, f"{child} ran twice: {starts}"


def job(lab: Lab, submitted: list[str], **parent: object) -> tuple[str, list[str]]:
    children = parent.pop("children", {})
    document = {"job_queue": "multi",
                "provision_data": {"jobs": [{"job_queue": q, **children} for q in lab.queues]}, **parent}
    parent_id = submit_job(document)
    submitted.append(parent_id)
    return parent_id, lab.store.children(parent_id)


def ended(lab: Lab, parent: str) -> dict:
    lab.wait_job(parent, lambda: lab.store.state(parent) in ("complete", "cancelled"), JOB_TIMEOUT, "the end")
    from convoy.coordinator.api import job_results

    return job_results(parent)


def device_of(lab: Lab, child: str) -> str:
    lab.wait_job(child, lambda: bool(lab.field(child, "device")), 60, "a device")
    return str(lab.field(child, "device"))


def running_in_group(pgid: int) -> list[psutil.Process]:
    """The processes of process group ``pgid`` that still run (a zombie runs nothing)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


# --- the coordinator's Celery worker --------------------------------------------------------------

def test_coordinator_killed_while_a_job_waits_its_allocation_timeout_still_fires(lab, fresh):
    blocker = submit_job({"job_queue": lab.queues[0], "test_data": {"test_cmds": WAIT_FOR}})
    lab.wait_job(blocker, lambda: lab.store.state(blocker) == "test", what="the blocker's test")
    parent, _ = job(lab, fresh, allocation_timeout=8, test_data={"test_cmds": "true"})
    lab.kill(lab.coordinator_pid())  # the deadline lives in Redis, not in a countdown message of this process
    results = ended(lab, parent)
    assert results["outcome"] == "fail" and results["message"] == "Timed out waiting for devices to allocate"
    let_go(lab, blocker)
    lab.wait_job(blocker, lambda: lab.store.state(blocker) == "complete", what="the blocker's end")


def test_coordinator_killed_while_children_provision_the_job_completes(lab, fresh):
    parent, children = job(lab, fresh, test_data={"test_cmds": "true"})
    lab.wait_job(children[0], lambda: lab.store.state(children[0]) == "provision", what="provisioning")
    lab.kill(lab.coordinator_pid())
    results = ended(lab, parent)
    assert (results["job_state"], results["outcome"]) == ("complete", "pass"), results.get("message")


def test_coordinator_killed_during_a_reservation_it_runs_to_its_deadline(lab, fresh):
    parent, _ = job(lab, fresh, reserve_data={"ssh_keys": ["gh:alice"], "timeout": "8"})
    lab.wait_job(parent, lambda: bool(lab.field(parent, "reserve_until")), what="the reservation")
    lab.kill(lab.coordinator_pid())
    results = ended(lab, parent)
    assert (results["job_state"], results["outcome"]) == ("complete", "pass"), results.get("message")
    assert "reservation timed out after 8 seconds" in results["reserve_output"]


def test_coordinator_killed_during_the_parents_test_fails_it_and_cleans_up(lab, fresh):
    parent, _ = job(lab, fresh, test_data={"test_cmds": "echo started; sleep 600"})
    lab.wait_job(parent, lambda: bool(lab.field(parent, "script_pgid")), what="the parent's test_cmds")
    pgid = int(str(lab.field(parent, "script_pgid")))
    lab.kill(lab.coordinator_pid())
    results = ended(lab, parent)
    assert (results["job_state"], results["outcome"]) == ("complete", "fail")
    assert "coordinator died" in results["test_output"] and results["test_status"] == 1
    assert "released 2 device(s)" in results["cleanup_output"]
    assert "ended the test commands the dead coordinator left running" in results["test_output"]
    assert not running_in_group(pgid), "the parent's test commands were left running"


def test_coordinator_killed_while_children_test_the_job_completes(lab, fresh):
    parent, children = job(lab, fresh, children={"test_data": {"test_cmds": WAIT_FOR}})
    for child in children:
        lab.wait_job(child, lambda c=child: lab.store.state(c) == "test", what="the child's test")
    lab.kill(lab.coordinator_pid())
    lab.wait_ready()
    let_go(lab, *children)
    results = ended(lab, parent)
    assert (results["job_state"], results["outcome"]) == ("complete", "pass"), results.get("message")


def test_coordinator_killed_during_cleanup_the_cleanup_finishes(lab, fresh):
    parent, _ = job(lab, fresh, test_data={"test_cmds": "true"})
    lab.wait_job(parent, lambda: lab.store.state(parent) == "cleanup", what="cleanup")
    lab.kill(lab.coordinator_pid())
    results = ended(lab, parent)
    assert (results["job_state"], results["outcome"]) == ("complete", "pass"), results.get("message")


# --- a busy device's Celery worker -----------------------------------------------------------------

def died(device: str, state: str) -> str:
    return f"device worker for {device} died during {state}"


def kill_device_worker(lab: Lab, child: str) -> str:
    """SIGKILL the Celery worker of the child's device (``convoy worker`` restarts it); the device's name."""
    device = device_of(lab, child)
    lab.kill(lab.device_worker_pid(device))
    return device


def test_device_worker_killed_during_provision_fails_the_allocation(lab, fresh):
    parent, (_, victim) = job(lab, fresh, test_data={"test_cmds": "true"})
    lab.wait_job(victim, lambda: lab.store.state(victim) == "provision", what="provisioning")
    device = kill_device_worker(lab, victim)
    results = ended(lab, parent)
    assert results["outcome"] == "fail" and results["message"] == "Unable to allocate all devices"
    assert died(device, "provision") in lab.store.get(victim)["message"]


def test_device_worker_killed_during_a_reservation_fails_the_job_naming_it(lab, fresh):
    parent, (_, victim) = job(lab, fresh, reserve_data={"ssh_keys": ["gh:alice"], "timeout": "600"})
    lab.wait_job(parent, lambda: bool(lab.field(parent, "reserve_until")), what="the reservation")
    device = kill_device_worker(lab, victim)
    lab.wait_job(victim, lambda: lab.store.state(victim) == "cancelled", what="the victim's end")
    subprocess.run([CONVOY, "release", parent], check=True, capture_output=True)  # the user is done early
    results = ended(lab, parent)
    assert results["outcome"] == "fail" and died(device, "allocated") in results["message"]


def test_device_worker_killed_during_the_parents_test_fails_the_job_naming_it(lab, fresh):
    parent, (_, victim) = job(lab, fresh, test_data={"test_cmds": WAIT_FOR})
    lab.wait_job(parent, lambda: bool(lab.field(parent, "script_pgid")), what="the parent's test_cmds")
    device = kill_device_worker(lab, victim)
    lab.wait_job(victim, lambda: lab.store.state(victim) == "cancelled", what="the victim's end")
    let_go(lab, parent)
    results = ended(lab, parent)
    assert results["test_status"] == 0, "the parent's own test passed: only the child fails the job"
    assert results["outcome"] == "fail" and died(device, "allocated") in results["message"]


def test_device_worker_killed_during_a_childs_test_fails_the_job_naming_it(lab, fresh):
    parent, (_, victim) = job(lab, fresh, children={"test_data": {"test_cmds": "echo testing; sleep 600"}})
    lab.wait_job(victim, lambda: "testing" in lab.store.output(victim, "test"), what="the child's test")
    device = kill_device_worker(lab, victim)
    results = ended(lab, parent)
    assert results["outcome"] == "fail" and died(device, "test") in results["message"]


def test_device_worker_killed_during_cleanup_the_rest_finishes(lab, fresh):
    parent, (_, victim) = job(lab, fresh, test_data={"test_cmds": "true"})
    lab.wait_job(victim, lambda: lab.store.state(victim) == "cleanup", what="the victim's cleanup")
    device = kill_device_worker(lab, victim)
    results = ended(lab, parent)
    assert results["job_state"] == "complete"
    assert "released 2 device(s)" in results["cleanup_output"]
    # its restarted worker says what happened and cleans the device again (the fixture sees it idle)
    assert died(device, "cleanup") in lab.store.output(victim, "cleanup")


# --- the convoy worker supervisor: every device worker of the host dies with it ---------------------

def test_worker_supervisor_killed_while_devices_are_held_fails_the_job_then_cleans_them(lab, fresh):
    parent, children = job(lab, fresh, test_data={"test_cmds": WAIT_FOR})
    lab.wait_job(parent, lambda: bool(lab.field(parent, "script_pgid")), what="the parent's test_cmds")
    devices = [device_of(lab, child) for child in children]
    lab.kill_worker_supervisor()
    # the scheduler notices the dead workers by their leases and ends their jobs, naming each device
    for child in children:
        lab.wait_job(child, lambda c=child: lab.store.state(c) == "cancelled", what="the child's end")
    let_go(lab, parent)
    results = ended(lab, parent)
    assert results["outcome"] == "fail"
    for device in devices:
        assert died(device, "allocated") in results["message"]
    # still held by the ended job (dirty) until the host is back; then cleaned and idle
    assert not lab.all_idle()
    lab.start_worker()
    lab.wait_ready()
    wait_for(lab.all_idle, timeout=60, what="every device cleaned and idle")


# --- cancel after a crash ---------------------------------------------------------------------------

def test_a_job_cancelled_while_no_coordinator_runs_ends_cancelled_with_cleanup_done(lab, fresh):
    parent, children = job(lab, fresh, reserve_data={"ssh_keys": ["gh:alice"], "timeout": "600"})
    lab.wait_job(parent, lambda: bool(lab.field(parent, "reserve_until")), what="the reservation")
    lab.kill_coordinator_supervisor()  # no coordinator at all now: nothing would notice a thread parked
    cancelled = subprocess.run([CONVOY, "cancel", parent], env=lab.env, capture_output=True, text=True)
    assert cancelled.returncode == 0, cancelled.stderr
    lab.start_coordinator()
    results = ended(lab, parent)
    assert (results["job_state"], results["outcome"]) == ("cancelled", "cancelled")
    assert "reservation ended early by cancel" in results["reserve_output"]
    assert "released 2 device(s)" in results["cleanup_output"]
    assert all(lab.store.state(child) == "cancelled" for child in children)
