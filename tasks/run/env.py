"""Where the parent's commands run on the coordinator: its directory, devices and environment.

Shared by the parent's tasks, the reserve phase and secondary-connection guests.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from convoy.config.jobs import GUEST_QUEUE
from convoy.config.settings import load_settings
from convoy.connectors.base import SSHTarget
from convoy.coordinator.state.jobs import JobStore
from convoy.tasks.run.multinode_env import multinode_env
from convoy.tasks.run.ssh import write_ssh_setup


def parent_dir(job_id: str) -> Path:
    path = load_settings().jobs_dir / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_targets(store: JobStore, parent_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(child id, device_info) of every child holding a device, in ``provision_data.jobs`` order."""
    children = store.children(parent_id)
    rows = store.fields(children, "device_info", "job_queue")
    # a guest (secondary connection) is recorded on no device queue of its own
    return [(cid, row["device_info"] or {}) for cid, row in zip(children, rows) if row["job_queue"] != GUEST_QUEUE]


def ssh_target(info: dict[str, Any], username: str) -> SSHTarget:
    return SSHTarget(host=str(info["device_ip"]), port=int(info.get("ssh_port", 22)), username=username)


def parent_test_env(store: JobStore, parent_id: str, job: dict[str, Any],
                    work_dir: Path | None = None) -> dict[str, str]:
    """Environment of commands run on the coordinator: DEVICE_IP_1..N, SSH set up for every device.

    ``job`` is the document whose ``test_data`` (user name, env) applies: the
    parent's, or a guest's; ``work_dir`` holds the SSH set-up (default: the
    parent's directory).
    """
    from convoy.connectors.sshkeys import ensure_agent_key

    settings = load_settings()
    username = (job.get("test_data") or {}).get("test_username", "ubuntu")
    infos = [info for _, info in device_targets(store, parent_id)]
    key = ensure_agent_key(settings.keys_dir)
    bin_dir = write_ssh_setup(work_dir or parent_dir(parent_id), key,
                              [ssh_target(i, username) for i in infos if i.get("device_ip")])
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in ((job.get("test_data") or {}).get("env") or {}).items()})
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({"CONVOY_JOB_ID": parent_id, "CONVOY_GROUP_ID": parent_id, "CONVOY_REDIS_URL": settings.redis_url,
                "TEST_USERNAME": username, **multinode_env(job)})
    for i, info in enumerate(infos, start=1):
        env[f"DEVICE_IP_{i}"] = str(info.get("device_ip", ""))
    return env


