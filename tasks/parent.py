"""The parent of a multi job: collect → reserve → test → cleanup, on the coordinator.

``collect`` is the chord's body: it runs the moment the last child is
allocated and writes ``job_list.json``.  Each later task skips its work when
the job was cancelled or its allocation aborted, so ``cleanup`` — the end of
the chain, also queued directly by an abort — always runs, exactly once.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import Task

from convoy.config.celery_app import app
from convoy.config.settings import load_settings
from convoy.connectors.base import SSHTarget
from convoy.coordinator import canvas
from convoy.coordinator.cancel import ALLOCATING, ALLOCATION_TIMED_OUT, abort_allocation, cancel_device_job
from convoy.coordinator.connection import get_store
from convoy.coordinator.store import FINAL_STATES, JobStore
from convoy.tasks import states
from convoy.tasks.control import ControlWatcher
from convoy.tasks.multinode_env import multinode_env, multinode_files
from convoy.tasks.runner import run_script
from convoy.tasks.sshclient import write_ssh_setup

log = logging.getLogger(__name__)

#: how long cleanup waits for every child to release its device
CHILD_RELEASE_TIMEOUT = 600.0


def parent_dir(job_id: str) -> Path:
    path = load_settings().jobs_dir / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def _skip(store: JobStore, parent_id: str) -> bool:
    record = store.get(parent_id)
    return record["state"] in FINAL_STATES or bool(record.get("cancel_requested")) or \
        store.happened(parent_id, "abort")


def _out(store: JobStore, job_id: str, phase: str):
    return lambda text: store.append_output(job_id, phase, text if text.endswith("\n") else text + "\n")


def device_targets(store: JobStore, parent_id: str, username: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(child id, device_info) of every child, in ``provision_data.jobs`` order."""
    return [(cid, store.get(cid).get("device_info") or {}) for cid in store.children(parent_id)]


def ssh_target(info: dict[str, Any], username: str) -> SSHTarget:
    return SSHTarget(host=str(info["device_ip"]), port=int(info.get("ssh_port", 22)), username=username)


@app.task(bind=True, name=canvas.COLLECT)
def collect(self: Task, results: list[Any], parent_id: str) -> None:
    """Chord body: every child is allocated; write job_list.json, enter ``allocated``."""
    store = get_store()
    if _skip(store, parent_id):
        return
    job_list = [{"job_id": cid, "device_info": info} for cid, info in device_targets(store, parent_id)]
    path = parent_dir(parent_id) / "job_list.json"
    path.write_text(json.dumps(job_list, indent=2) + "\n")
    store.set_fields(parent_id, allocated_at=f"{time.time():.6f}")
    store.end_phase(parent_id, "provision", 0)
    store.transition(parent_id, "allocated", allowed_from=["provision"])
    store.start_phase(parent_id, "allocate")
    _out(store, parent_id, "allocate")(f"all {len(job_list)} devices allocated; wrote {path}")
    store.end_phase(parent_id, "allocate", 0)
    states.announce(self, "allocated", devices=len(job_list))


@app.task(bind=True, name=canvas.RESERVE)
def reserve(self: Task, parent_id: str) -> None:
    store = get_store()
    if _skip(store, parent_id):
        return
    job = store.get(parent_id)["document"]
    if not job.get("reserve_data"):
        return
    from convoy.tasks.reserve import run_reservation

    store.transition(parent_id, "reserve")
    store.start_phase(parent_id, "reserve")
    states.announce(self, "reserve")
    with ControlWatcher(store.r, parent_id) as control:
        status = run_reservation(store, parent_id, job, control, _out(store, parent_id, "reserve"),
                                 on_reserved=lambda devices: states.announce(
                                     self, "reserved", devices=[d.hint for d in devices]))
    store.end_phase(parent_id, "reserve", status)


@app.task(bind=True, name=canvas.TEST)
def test(self: Task, parent_id: str) -> None:
    """Run the parent's test_cmds here and every child's on its device, together."""
    store = get_store()
    if _skip(store, parent_id):
        return
    job = store.get(parent_id)["document"]
    test_data = job.get("test_data") or {}
    if (store.phases(parent_id).get("reserve") or {}).get("status", 0) != 0:
        _out(store, parent_id, "test")("reserve phase failed; skipping the test phase")
        return
    children = store.children(parent_id)
    testing_children = [cid for cid in children if ((store.get(cid)["document"].get("test_data") or {}).get("test_cmds"))]
    if not test_data.get("test_cmds") and not testing_children:
        return
    store.transition(parent_id, "test")
    store.start_phase(parent_id, "test")
    states.announce(self, "test")
    out = _out(store, parent_id, "test")
    for cid in testing_children:
        store.signal(cid, "test")
    status = 0
    with ControlWatcher(store.r, parent_id) as control:
        if test_data.get("test_cmds"):
            env = parent_test_env(store, parent_id, job)
            status = run_script(test_data["test_cmds"], cwd=parent_dir(parent_id), env=env, on_output=out,
                                cancel=control.cancel_event, timeout=job.get("global_timeout"),
                                private_files=multinode_files(parent_dir(parent_id), env))
        if testing_children:
            status = max(status, _wait_children_tests(store, testing_children, job, out))
    store.end_phase(parent_id, "test", status)


def _wait_children_tests(store: JobStore, children: list[str], job: dict[str, Any], out) -> int:
    def test_ended(cid: str) -> bool:
        phase = store.phases(cid).get("test") or {}
        return "ended" in phase or store.state(cid) in FINAL_STATES

    store.wait_until(children, lambda: all(test_ended(c) for c in children), job.get("global_timeout"))
    status = 0
    for cid in children:
        code = (store.phases(cid).get("test") or {}).get("status")
        if code is None:
            out(f"child {cid}: test did not finish")
            status = 1
        elif code != 0:
            out(f"child {cid}: test_cmds exited {code}")
            status = 1
    return status


def parent_test_env(store: JobStore, parent_id: str, job: dict[str, Any]) -> dict[str, str]:
    """Environment of the parent's test_cmds: DEVICE_IP_1..N, SSH set up for every device."""
    from convoy.connectors.sshkeys import ensure_agent_key

    settings = load_settings()
    username = (job.get("test_data") or {}).get("test_username", "ubuntu")
    infos = [info for _, info in device_targets(store, parent_id)]
    key = ensure_agent_key(settings.keys_dir)
    bin_dir = write_ssh_setup(parent_dir(parent_id), key,
                              [ssh_target(i, username) for i in infos if i.get("device_ip")])
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in ((job.get("test_data") or {}).get("env") or {}).items()})
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({"CONVOY_JOB_ID": parent_id, "CONVOY_GROUP_ID": parent_id, "CONVOY_REDIS_URL": settings.redis_url,
                "TEST_USERNAME": username, **multinode_env(job)})
    for i, info in enumerate(infos, start=1):
        env[f"DEVICE_IP_{i}"] = str(info.get("device_ip", ""))
    return env


@app.task(bind=True, name=canvas.CLEANUP)
def cleanup(self: Task, parent_id: str) -> None:
    """Release every child (each cleans its device), then end the parent. Runs once."""
    store = get_store()
    if not store.once(parent_id, "cleanup"):
        return
    store.transition(parent_id, "cleanup")
    store.start_phase(parent_id, "cleanup")
    states.announce(self, "cleanup")
    out = _out(store, parent_id, "cleanup")
    children = store.children(parent_id)
    for cid in children:
        if store.state(cid) not in FINAL_STATES:
            store.signal(cid, "release")
            # a child still waiting in its queue never gets a device: cancel it now
            store.transition(cid, "cancelled", allowed_from=["waiting"], outcome="cancelled",
                             message=f"parent job {parent_id} ended before it started")
    released = store.wait_until(children, lambda: all(s in FINAL_STATES for s in store.states(children).values()),
                                CHILD_RELEASE_TIMEOUT)
    status = 0
    if not released:
        for cid, state in store.states(children).items():
            if state not in FINAL_STATES:
                out(f"child {cid} did not release its device within {CHILD_RELEASE_TIMEOUT:g}s")
                cancel_device_job(store, cid, "did not release in time")
                store.transition(cid, "cancelled", outcome="fail", message="did not release in time")
                status = 1
    out(f"released {len(children)} device(s)")
    store.end_phase(parent_id, "cleanup", status)
    _finish_group(store, parent_id)
    record = store.get(parent_id)
    cancelled = bool(record.get("cancel_requested"))
    failed = any(p.get("status", 0) != 0 for p in store.phases(parent_id).values())
    store.transition(parent_id, "cancelled" if cancelled else "complete",
                     outcome="cancelled" if cancelled else ("fail" if failed else "pass"))
    states.announce(self, "cancelled" if cancelled else "complete")


def _finish_group(store: JobStore, parent_id: str) -> None:
    try:
        from convoy.coordinator.multinode.group import expire_group

        expire_group(store.r, parent_id, 24 * 3600)
    except ImportError:  # pragma: no cover - MultiNode is part of convoy
        pass


@app.task(bind=True, name=canvas.ALLOCATION_TIMEOUT)
def allocation_timeout(self: Task, parent_id: str) -> None:
    """Fires ``allocation_timeout`` seconds after submission; a no-op once allocated."""
    store = get_store()
    if store.state(parent_id) in ALLOCATING:
        abort_allocation(store, parent_id, ALLOCATION_TIMED_OUT, load_settings())
