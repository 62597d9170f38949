"""Where test commands run and what they get: the job's directory, its devices, its environment.

:func:`command_env` is the one builder of a test command's environment, for
a device's ``test_cmds`` (on its worker), the parent's (on the coordinator)
and a secondary connection's (a guest).  :func:`parent_test_env` gathers what
the coordinator side needs for it; a device job does the same on its worker.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from convoy.config.jobs import GUEST_QUEUE
from convoy.config.schemas import DEFAULT_TEST_USERNAME
from convoy.config.settings import load_settings
from convoy.connectors.base import SSHTarget
from convoy.coordinator.state.jobs import JobStore
from convoy.tasks.run.ssh import write_ssh_setup

#: where LAVA's MultiNode helpers keep their caches (each job gets its own file there)
CACHE_FILE = "/tmp/lava_multi_node_cache.txt"
NETWORK_CACHE_FILE = "/tmp/lava_multi_node_network_cache.txt"
#: the worker's variables a test command gets (when set): locale, time zone, terminal, who it runs as
PASSED_ON = ("LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME")
#: the system part of a test command's PATH (after convoy's SSH wrappers and commands)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: a test command's private temporary directory, in its working directory
TMP_DIR = "tmp"


def secrets_of(*urls: str | None) -> list[str]:
    """What no test command's environment may show: these URLs and their passwords.

    A password under 4 characters is not looked for in values (it would match
    half of any environment); the URLs holding it are."""
    from urllib.parse import unquote, urlsplit

    found: list[str] = []
    for url in urls:
        if not url:
            continue
        found.append(url)
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password and len(password) >= 4:
            found += [password, unquote(password)]
    return found


def multinode_timeout(job: Mapping[str, Any]) -> float | None:
    """The member's default MultiNode wait (``timeouts: multinode``), if it sets one."""
    timeout = (job.get("timeouts") or {}).get("multinode")
    return float(timeout) if timeout else None


def multinode_env(job: Mapping[str, Any]) -> dict[str, str]:
    """MultiNode settings of a member (or the parent): default wait timeout, cache path."""
    env: dict[str, str] = {}
    timeout = (job.get("timeouts") or {}).get("multinode")
    if timeout:
        env["CONVOY_MULTINODE_TIMEOUT"] = str(timeout)
    cache = (job.get("multinode") or {}).get("cache_file")
    if cache:
        env["CONVOY_MULTINODE_CACHE"] = str(cache)
    return env


def multinode_files(job_dir: Path, env: Mapping[str, str]) -> dict[str, Path]:
    """The job's own files at LAVA's fixed cache paths (unless the job chose its own path)."""
    if "CONVOY_MULTINODE_CACHE" in env or "CONVOY_GROUP_ID" not in env:
        return {}
    return {CACHE_FILE: job_dir / "multinode" / "cache.txt",
            NETWORK_CACHE_FILE: job_dir / "multinode" / "network-cache.txt"}


def command_env(base: Mapping[str, str], job: Mapping[str, Any], *, job_id: str,
                ssh_bin: Path, work_dir: Path | None = None, device_ip: str | None = None,
                device_ips: Sequence[str] = (), group_id: str | None = None, role: str | None = None,
                secrets: Sequence[str] = (), python_bin: Path = Path(sys.executable).parent) -> dict[str, str]:
    """The environment a job's test commands run in (plain data in, plain data out).

    An allow-list, nothing else of ``base`` (the worker's environment: no
    Redis or broker URL, no state directory, no credentials):

    * ``PATH``: the SSH wrappers in ``ssh_bin``, convoy's commands
      (``python_bin``: the ``lava-*`` commands), then :data:`SYSTEM_PATH`;
    * ``HOME`` (the job's directory, ``work_dir``) and ``TMPDIR`` (``tmp/``
      in it; the runner creates it);
    * :data:`PASSED_ON` (``LANG``, ``LC_*``, ``TZ``, ``TERM``, ``USER``,
      ``LOGNAME``) when ``base`` sets them, unless a value holds one of
      ``secrets``;

    then the job's ``test_data.env`` (which may set anything, ``PATH``
    included: it goes after convoy's two directories), then convoy's own
    variables, which win: ``CONVOY_JOB_ID``, ``TEST_USERNAME``,
    ``DEVICE_IP`` (a device's commands) or ``DEVICE_IP_1..N`` (the
    parent's, in ``provision_data.jobs`` order); for a member of a group
    (or the parent) ``CONVOY_GROUP_ID``, ``CONVOY_ROLE`` and the MultiNode
    settings (the runner adds ``CONVOY_MULTINODE_SOCKET`` while it serves
    the job's relay: ``relay.relay_env``).
    """
    hidden = [s for s in secrets if s]
    env = {key: value for key, value in base.items()
           if (key in PASSED_ON or key.startswith("LC_")) and not any(s in value for s in hidden)}
    env["PATH"] = SYSTEM_PATH
    if work_dir is not None:
        env["HOME"] = str(work_dir)
        env["TMPDIR"] = str(work_dir / TMP_DIR)
    test_data = job.get("test_data") or {}
    env.update({str(k): str(v) for k, v in (test_data.get("env") or {}).items()})
    env["PATH"] = os.pathsep.join([str(ssh_bin), str(python_bin), env["PATH"]])
    env["CONVOY_JOB_ID"] = job_id
    env["TEST_USERNAME"] = test_data.get("test_username", DEFAULT_TEST_USERNAME)
    if device_ip is not None:
        env["DEVICE_IP"] = device_ip
    if group_id:
        env["CONVOY_GROUP_ID"] = group_id
        if role:
            env["CONVOY_ROLE"] = role
        env.update(multinode_env(job))  # members inherit the group's settings unless they set their own
    for i, ip in enumerate(device_ips, start=1):
        env[f"DEVICE_IP_{i}"] = ip
    return env


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
                    work_dir: Path | None = None, out: Callable[[str], None] = print) -> dict[str, str]:
    """Environment of commands run on the coordinator: DEVICE_IP_1..N, SSH set up for every device.

    ``job`` is the document whose ``test_data`` (user name, env) applies: the
    parent's, or a guest's; ``work_dir`` holds the SSH set-up (default: the
    parent's directory).  The SSH set-up uses the parent's own key, which
    every device of the job trusts (:func:`~convoy.tasks.run.jobkeys.parent_key`;
    raises ConvoyError naming the devices that would not).
    """
    from convoy.tasks.run.jobkeys import parent_key

    settings = load_settings()
    username = (job.get("test_data") or {}).get("test_username", DEFAULT_TEST_USERNAME)
    infos = [info for _, info in device_targets(store, parent_id)]
    key = parent_key(store, parent_id, parent_dir(parent_id), out)
    work_dir = work_dir or parent_dir(parent_id)
    bin_dir = write_ssh_setup(work_dir, key, [ssh_target(i, username) for i in infos if i.get("device_ip")])
    return command_env(os.environ, job, job_id=parent_id, ssh_bin=bin_dir, work_dir=work_dir,
                       device_ips=[str(info.get("device_ip", "")) for info in infos], group_id=parent_id,
                       secrets=secrets_of(settings.redis_url, settings.broker_url))
