"""Process hygiene: what ``convoy run`` and ``convoy worker`` start, they take with them.

Real commands as a user (or a CI timeout) runs them; processes are found by
pid (psutil) and killed by pid.  A zombie — dead, only waiting for a parent
to reap it — counts as gone.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Iterable

import psutil
import pytest
import yaml

from convoy.coordinator.state import keys
from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.workers.embedded.cluster import emulated_devices

from helpers import CONVOY, unique_queue, wait_for, wait_until

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120
EXIT_CANCELLED = 3


# --- helpers ------------------------------------------------------------------------------
def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes that still run (a reused pid is another process: psutil compares start times)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def describe(processes: Iterable[psutil.Process]) -> str:
    out = []
    for process in processes:
        try:
            out.append(f"{process.pid} {' '.join(process.cmdline())[:160]}")
        except psutil.Error:
            out.append(f"{process.pid} (gone)")
    return "\n".join(out)


def kill_all(processes: Iterable[psutil.Process]) -> None:
    """Test teardown: nothing a failed test leaves behind outlives it."""
    for process in running(processes):
        try:
            process.kill()
        except psutil.Error:
            pass


def named(processes: Iterable[psutil.Process], word: str) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            if any(word in part for part in process.cmdline()):
                found.append(process)
        except psutil.Error:
            pass
    return found


def device_workers(device: str) -> list[psutil.Process]:
    """Every Celery worker process serving ``device`` on this machine, found by command line."""
    wanted = f"{device}@%h"
    return [p for p in psutil.process_iter() if wanted in _cmdline(p) and "celery" in " ".join(_cmdline(p))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def tree_with_sleeps(pid: int, count: int) -> list[psutil.Process] | None:
    """The process tree of ``pid`` once ``count`` of the jobs' ``sleep 600`` run in it."""
    tree = process_tree(pid)
    return tree if sum(_cmdline(p) == ["sleep", "600"] for p in tree) >= count else None


def clean_env(state: Path) -> dict[str, str]:
    """The environment of a user who named no Redis: ``convoy run`` starts its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVOY_")}
    env["CONVOY_STATE_DIR"] = str(state)
    return env


def output_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# --- convoy run -----------------------------------------------------------------------------
def test_convoy_run_sent_sigterm_cancels_its_job_and_leaves_no_process_behind(tmp_path):
    qa, qb = unique_queue("hyg-a"), unique_queue("hyg-b")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "job_queue": "multi",
        "provision_data": {"jobs": [{"job_queue": qa, "test_data": {"test_cmds": "sleep 600"}},
                                    {"job_queue": qb}]},
        "test_data": {"test_cmds": "sleep 600"},
    }))
    out = tmp_path / "run.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen([CONVOY, "run", str(job), "--state-dir", str(tmp_path / "state")],
                                env=clean_env(tmp_path / "state"), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        wait_for(lambda: "[job] state: test" in output_of(out) and f"{qa}#1] state: test" in output_of(out),
                 JOB_TIMEOUT, "the job and its first child in test")
        # both test_cmds run (a sleep under the coordinator's worker, one under the device's)
        tree = wait_for(lambda: tree_with_sleeps(proc.pid, 2), 30, "both test_cmds running")
        assert named(tree, "redis-server"), describe(tree)
        assert len(named(tree, "celery")) == 3, describe(tree)  # two devices and the coordinator
        assert named(tree, "convoy.connectors.emulated.farm"), describe(tree)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=JOB_TIMEOUT + 60) == EXIT_CANCELLED, output_of(out)
        assert wait_until(lambda: not running(tree), 30), \
            f"left running after convoy run exited:\n{describe(running(tree))}"
        shown = output_of(out)
        assert "cancelling job" in shown
        # the job's cleanup ran on both devices before the cluster stopped
        assert f"[{qa}#1 cleanup] device emu-{qa}-1 cleaned up" in shown, shown
        assert f"[{qb}#2 cleanup] device emu-{qb}-1 cleaned up" in shown, shown
        assert "(cancelled)" in shown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_all(tree)


def test_convoy_run_killed_takes_its_redis_workers_and_devices_with_it(tmp_path):
    queue = unique_queue("hyg-kill")
    (device,) = emulated_devices({queue: 1}, prefix=f"runkill-{os.getpid()}")
    agent = tmp_path / "agent.yaml"
    agent.write_text(yaml.safe_dump({"devices": [{"name": device.name, "queues": [queue], "connector": "emulated",
                                                  "config": {**device.config, "provision_delay": 600}}]}))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"job_queue": queue}))
    out = tmp_path / "run.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen([CONVOY, "run", str(job), "--agent", str(agent), "--state-dir", str(tmp_path / "s")],
                                env=clean_env(tmp_path / "s"), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        wait_for(lambda: "[job] state: provision" in output_of(out), JOB_TIMEOUT, "the job provisioning")
        tree = process_tree(proc.pid)
        assert named(tree, "redis-server") and len(named(tree, "celery")) == 2, describe(tree)
        proc.kill()  # no handler runs: the children must notice by themselves
        proc.wait()
        assert wait_until(lambda: not running(tree), 30), \
            f"left running after convoy run was killed:\n{describe(running(tree))}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_all(tree)


# --- convoy worker ----------------------------------------------------------------------
def write_agent(path: Path, queues: list[str], prefix: str) -> list:
    devices = emulated_devices({q: 1 for q in queues}, prefix=prefix)
    path.write_text(yaml.safe_dump({"name": "hygiene-host", "devices": [
        {"name": d.name, "queues": list(d.queues), "connector": "emulated", "config": d.config} for d in devices]}))
    return devices


def start_command(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as sink:
        return subprocess.Popen([CONVOY, *args], env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)


def serving_pid(device: str) -> int | None:
    """The pid of the worker that announced it consumes for ``device`` (None while none does)."""
    store = get_store()
    if not store.client.exists(keys.device_alive(device)):
        return None
    pid = store.client.hget(keys.device(device), "pid")
    return int(pid) if pid else None


def run_window(job_id: str) -> tuple[str, str]:
    """When the job held its device: provision started → cleanup ended (one clock, ISO strings)."""
    phases = get_store().phases(job_id)
    return phases["provision"]["started"], phases["cleanup"]["ended"]


def assert_never_overlap(job_ids: list[str]) -> None:
    windows = sorted(run_window(j) for j in job_ids)
    for (_, first_end), (second_start, _) in zip(windows, windows[1:]):
        assert first_end <= second_start, f"two jobs held one device at once: {windows}"


def test_convoy_worker_killed_and_started_again_serves_each_device_with_one_worker(cluster_redis_url,
                                                                                 coordinator_process, tmp_path):
    qa, qb = unique_queue("hyg-w1"), unique_queue("hyg-w2")
    devices = write_agent(tmp_path / "agent.yaml", [qa, qb], prefix=f"wk-{os.getpid()}")
    env = {**os.environ, "CONVOY_REDIS_URL": cluster_redis_url, "CONVOY_STATE_DIR": str(tmp_path / "state")}
    args = ["worker", "--config", str(tmp_path / "agent.yaml")]
    first = start_command(args, env, tmp_path / "worker1.log")
    second: subprocess.Popen | None = None
    trees: list[psutil.Process] = []
    try:
        old = {d.name: wait_for(lambda d=d: serving_pid(d.name), 60, f"{d.name} served") for d in devices}
        trees += process_tree(first.pid)
        assert all(psutil.pid_exists(pid) for pid in old.values())

        first.kill()  # SIGKILL: the supervisor runs no cleanup
        first.wait()
        assert wait_until(lambda: not running(trees), 30), \
            f"the killed supervisor left these running:\n{describe(running(trees))}"

        second = start_command(args, env, tmp_path / "worker2.log")
        for device in devices:
            wait_for(lambda d=device: serving_pid(d.name) not in (None, old[d.name]), 60, f"{device.name} served again")
        trees += process_tree(second.pid)
        for device in devices:
            workers = device_workers(device.name)
            assert [p.pid for p in workers] == [serving_pid(device.name)], describe(workers)

        jobs = [submit_job({"job_queue": qa, "test_data": {"test_cmds": "echo on $DEVICE_IP; sleep 1"}})
                for _ in range(2)]
        for job_id in jobs:
            assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
            assert job_results(job_id)["outcome"] == "pass"
        assert {job_results(j)["device"] for j in jobs} == {devices[0].name}
        assert_never_overlap(jobs)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        kill_all(trees)


def test_a_second_worker_for_a_device_waits_for_its_lock_and_takes_over_when_it_is_released(
        cluster_redis_url, coordinator_process, tmp_path):
    queue = unique_queue("hyg-lock")
    (device,) = write_agent(tmp_path / "agent.yaml", [queue], prefix=f"lk-{os.getpid()}")
    env = {**os.environ, "CONVOY_REDIS_URL": cluster_redis_url, "CONVOY_STATE_DIR": str(tmp_path / "state")}
    agent = str(tmp_path / "agent.yaml")
    farm = start_command(["devices", "--config", agent], env, tmp_path / "devices.log")
    holder = start_command(["worker", "--no-devices", "--config", agent], env, tmp_path / "holder.log")
    waiter: subprocess.Popen | None = None
    trees: list[psutil.Process] = []
    try:
        holder_pid = wait_for(lambda: serving_pid(device.name), 60, "the first worker serving")
        trees += process_tree(holder.pid)
        # a second supervisor for the same device, as an operator starting it twice would
        waiter = start_command(["worker", "--no-devices", "--config", agent], env, tmp_path / "waiter.log")
        device_out = tmp_path / "state" / "logs" / f"{device.name}.out"
        wait_for(lambda: f"device {device.name} is served by another worker (pid {holder_pid}" in output_of(device_out),
                 60, "the second worker waiting for the device's lock")
        trees += process_tree(waiter.pid)
        assert len(device_workers(device.name)) == 2  # both run; only one consumes

        jobs = [submit_job({"job_queue": queue, "test_data": {"test_cmds": "sleep 1"}}) for _ in range(2)]
        for job_id in jobs:
            assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
        assert_never_overlap(jobs)
        assert serving_pid(device.name) == holder_pid

        holder.send_signal(signal.SIGTERM)  # a clean stop releases the lock: the waiting worker takes over
        assert holder.wait(timeout=60) == 0
        wait_for(lambda: serving_pid(device.name) not in (None, holder_pid), 60, "the second worker serving")
        assert [p.pid for p in device_workers(device.name)] == [serving_pid(device.name)]
        job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": "true"}})
        assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
        assert job_results(job_id)["outcome"] == "pass"
    finally:
        for proc in (holder, waiter, farm):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        kill_all(trees)


# --- the device lock itself -------------------------------------------------------------------
def holder_token(process: subprocess.Popen, host: str | None = None) -> str:
    from convoy.coordinator.state.leases import Holder

    return Holder(host=host or socket.gethostname(), pid=process.pid,
                  started=psutil.Process(process.pid).create_time(), nonce="other").token()


def test_the_device_lock_is_taken_over_from_a_killed_holder_at_once_but_never_from_a_live_one(redis_client):
    from convoy.coordinator.state.leases import DeviceLock

    other = subprocess.Popen(["sleep", "600"])
    try:
        redis_client.set(keys.device_worker("dev-1"), holder_token(other), px=60_000)
        lock = DeviceLock(redis_client, "dev-1")
        assert lock.acquire(timeout=1.0) is False  # the holder runs: wait, never take it
        assert redis_client.get(keys.device_worker("dev-1")) == holder_token(other)
        other.kill()
        other.wait()
        assert lock.acquire(timeout=0) is True  # its pid is gone: no need to wait out its lease
        assert lock.renew() is True
        lock.release()
        assert redis_client.get(keys.device_worker("dev-1")) is None
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_a_holder_on_another_host_is_waited_for_until_its_lease_ends_and_a_lost_lock_is_noticed(redis_client):
    from convoy.coordinator.state.leases import DeviceLock

    other = subprocess.Popen(["sleep", "600"])
    try:
        redis_client.set(keys.device_worker("dev-2"), holder_token(other, host="elsewhere"), px=300)
        lock = DeviceLock(redis_client, "dev-2", lease_ms=60_000)
        seen = []
        assert lock.acquire(on_wait=seen.append, timeout=30) is True  # once the other lease runs out
        assert [h.host for h in seen] == ["elsewhere"]
        redis_client.set(keys.device_worker("dev-2"), holder_token(other, host="elsewhere"))  # taken from us
        assert lock.renew() is False
    finally:
        other.kill()
        other.wait()
