"""Single-device jobs end to end: real Redis, real celery workers, real SSH devices."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest
import yaml

from convoy.coordinator.state import keys
from convoy.coordinator.api import cancel_job, job_results, job_status, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store

from helpers import CONVOY, states_seen, unique_queue, wait_for_state, wait_until

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120


def test_job_runs_phases_in_order_and_reaches_the_device(start_cluster):
    queue = unique_queue("single")
    start_cluster({queue: 1})
    job_id = submit_job({
        "job_queue": queue,
        "provision_data": {"distro": "jammy"},
        "test_data": {"test_cmds": "ssh ubuntu@$DEVICE_IP cat os-release\necho reached $DEVICE_IP"},
    })
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    assert states_seen(job_id) == ["waiting", "provision", "test", "cleanup", "complete"]
    results = job_results(job_id)
    assert results["outcome"] == "pass"
    assert results["provision_status"] == 0 and results["test_status"] == 0 and results["cleanup_status"] == 0
    assert "IMAGE=jammy" in results["test_output"]
    assert f"reached {results['device_info']['device_ip']}" in results["test_output"]
    assert get_store().client.hget(keys.device(results["device"]), "state") == "idle"


def test_failing_test_command_fails_the_job_with_its_exit_code(start_cluster):
    queue = unique_queue("fail")
    start_cluster({queue: 1})
    job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": "echo about to fail\nexit 7"}})
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert results["test_status"] == 7
    assert results["outcome"] == "fail"
    assert "about to fail" in results["test_output"]
    assert results["cleanup_status"] == 0


def test_output_timeout_stops_a_silent_test_and_fails_its_phase(start_cluster):
    queue = unique_queue("silent")
    start_cluster({queue: 1})
    job_id = submit_job({"job_queue": queue, "output_timeout": 2,
                         "test_data": {"test_cmds": "echo printed once\nsleep 60\necho never"}})
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert results["test_status"] != 0 and results["outcome"] == "fail"
    assert "printed once" in results["test_output"] and "never" not in results["test_output"]
    assert "*** no output for 2 s (output_timeout); stopping ***" in results["test_output"]
    assert results["cleanup_status"] == 0


def test_provisioning_failure_fails_the_job_clearly(start_cluster):
    queue = unique_queue("provfail")
    start_cluster({queue: 1}, provision_fail=True)
    job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": "echo must not run"}})
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert results["provision_status"] != 0
    assert results["outcome"] == "fail"
    assert "test_status" not in results
    assert "provision" in results["provision_output"].lower()
    assert results["cleanup_status"] == 0


@pytest.mark.parametrize("phase", ["provision", "test", "cleanup"])
def test_cancel_during_each_phase_ends_cancelled_after_cleanup(start_cluster, phase):
    queue = unique_queue(f"cancel-{phase}")
    config = {"provision": {"provision_delay": 60}, "cleanup": {"cleanup_delay": 3}}.get(phase, {})
    start_cluster({queue: 1}, **config)
    job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": "sleep 60" if phase == "test" else "true"}})
    wait_for_state(job_id, phase)
    cancel_job(job_id)
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "cancelled"
    results = job_results(job_id)
    assert results["outcome"] == "cancelled"
    assert "cleanup_status" in results, "cleanup must run after a cancel"
    assert states_seen(job_id)[-2:] == ["cleanup", "cancelled"]
    assert get_store().client.hget(keys.device(results["device"]), "state") == "idle"


def test_cancel_of_a_waiting_job_never_runs_it(start_cluster):
    queue = unique_queue("waitcancel")
    start_cluster({queue: 1})
    first = submit_job({"job_queue": queue, "test_data": {"test_cmds": "sleep 60"}})
    second = submit_job({"job_queue": queue, "test_data": {"test_cmds": "true"}})
    wait_for_state(first, "test")
    assert job_status(second) == "waiting"
    cancel_job(second)
    assert job_status(second) == "cancelled"
    cancel_job(first)
    assert wait_for_job(first, timeout=JOB_TIMEOUT) == "cancelled"
    assert states_seen(second) == ["waiting", "cancelled"]


def test_two_jobs_for_one_device_run_one_after_the_other(start_cluster):
    queue = unique_queue("serial")
    start_cluster({queue: 1})
    script = "echo start $(date +%s.%N)\nsleep 1\necho end $(date +%s.%N)"
    first = submit_job({"job_queue": queue, "test_data": {"test_cmds": script}})
    second = submit_job({"job_queue": queue, "test_data": {"test_cmds": script}})
    assert wait_for_job(first, timeout=JOB_TIMEOUT) == "complete"
    assert wait_for_job(second, timeout=JOB_TIMEOUT) == "complete"
    store = get_store()
    first_cleanup_end = store.phases(first)["cleanup"]["ended"]
    second_provision_start = store.phases(second)["provision"]["started"]
    assert first_cleanup_end <= second_provision_start, "the second job started before the first released the device"
    assert job_results(first)["device"] == job_results(second)["device"]


def test_killed_worker_is_restarted_and_the_device_serves_again(cluster_redis_url, coordinator_process, tmp_path):
    from convoy.workers.embedded.cluster import emulated_devices

    queue = unique_queue("restart")
    (device,) = emulated_devices({queue: 1}, prefix=f"kill-{os.getpid()}")
    agent = tmp_path / "agent.yaml"
    agent.write_text(yaml.safe_dump({"name": "test-host", "devices": [
        {"name": device.name, "queues": [queue], "connector": "emulated", "config": device.config}]}))
    env = {**os.environ, "CONVOY_REDIS_URL": cluster_redis_url, "CONVOY_STATE_DIR": str(tmp_path / "state")}
    log = (tmp_path / "worker.log").open("w+")
    proc = subprocess.Popen([CONVOY, "worker", "--config", str(agent)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    store = get_store()
    try:
        assert wait_until(lambda: store.client.exists(keys.device_alive(device.name)) and
                     store.client.hget(keys.device(device.name), "pid"), 60), "worker never came up"
        old_pid = int(store.client.hget(keys.device(device.name), "pid"))
        os.kill(old_pid, signal.SIGKILL)
        assert wait_until(lambda: (store.client.hget(keys.device(device.name), "pid") or str(old_pid)) != str(old_pid), 60), \
            "the killed worker was not restarted"
        log.seek(0)
        assert f"worker for device {device.name} exited (signal 9); restarting it" in log.read()
        job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": "ssh ubuntu@$DEVICE_IP true"}})
        assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
        assert job_results(job_id)["outcome"] == "pass"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

