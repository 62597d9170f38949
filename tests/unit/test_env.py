"""The one builder of a test command's environment: plain data in, an env dict out (no Redis, no files)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from convoy.tasks.run.env import (
    CACHE_FILE,
    NETWORK_CACHE_FILE,
    SYSTEM_PATH,
    command_env,
    multinode_env,
    multinode_files,
    multinode_timeout,
    secrets_of,
)

BIN, PY, JOB = Path("/job/.convoy-ssh/bin"), Path("/venv/bin"), Path("/job")
BASE = {"PATH": "/usr/bin:/bin", "HOME": "/home/worker", "CONVOY_DEVICE_JSON": '{"name": "d1"}',
        "CONVOY_REDIS_URL": "redis://:s3cret@redis.lab:6379/0", "CONVOY_BROKER_URL": "redis://:s3cret@redis.lab/1"}
URL = "redis://:s3cret@redis.lab:6379/0"


def build(job: dict, **kwargs) -> dict[str, str]:
    return command_env(BASE, job, job_id=kwargs.pop("job_id", "j1"), ssh_bin=BIN, python_bin=PY, work_dir=JOB,
                       secrets=secrets_of(URL), **kwargs)


def test_a_single_device_job_gets_its_device_and_the_ssh_wrappers_first() -> None:
    env = build({}, device_ip="127.1.2.3")
    assert env == {"PATH": f"{BIN}{os.pathsep}{PY}{os.pathsep}{SYSTEM_PATH}", "HOME": "/job", "TMPDIR": "/job/tmp",
                   "CONVOY_JOB_ID": "j1", "TEST_USERNAME": "ubuntu",
                   "DEVICE_IP": "127.1.2.3"}


def test_the_worker_device_config_is_never_passed_on() -> None:
    assert "CONVOY_DEVICE_JSON" not in build({}, device_ip="h")
    assert "CONVOY_DEVICE_JSON" not in build({}, device_ips=["a"], group_id="p")


def test_the_parent_gets_every_device_in_job_order_and_no_single_device_ip() -> None:
    env = build({}, job_id="p", device_ips=["10.0.0.2", "10.0.0.1", ""], group_id="p")
    assert [env[f"DEVICE_IP_{i}"] for i in (1, 2, 3)] == ["10.0.0.2", "10.0.0.1", ""]
    assert "DEVICE_IP_4" not in env and "DEVICE_IP" not in env
    assert env["CONVOY_GROUP_ID"] == "p" and "CONVOY_ROLE" not in env


@pytest.mark.parametrize("group_id, role, expected", [
    (None, None, {}),
    ("p", "server", {"CONVOY_GROUP_ID": "p", "CONVOY_ROLE": "server", "CONVOY_MULTINODE_TIMEOUT": "30",
                     "CONVOY_MULTINODE_CACHE": "/tmp/mine.txt"}),
])
def test_group_members_get_their_group_role_and_multinode_settings(group_id, role, expected) -> None:
    job = {"timeouts": {"multinode": 30}, "multinode": {"cache_file": "/tmp/mine.txt"}}
    env = build(job, device_ip="h", group_id=group_id, role=role)
    grouped = {k: v for k, v in env.items() if k.startswith(("CONVOY_GROUP", "CONVOY_ROLE", "CONVOY_MULTINODE"))}
    assert grouped == expected


def test_user_env_and_user_name_apply_but_convoy_variables_win() -> None:
    job = {"test_data": {"test_username": "admin",
                         "env": {"FOO": 1, "PATH": "/evil", "CONVOY_JOB_ID": "x", "DEVICE_IP": "y", "HOME": "/h"}}}
    env = build(job, device_ip="127.0.0.9")
    assert (env["FOO"], env["HOME"], env["TEST_USERNAME"]) == ("1", "/h", "admin")
    assert env["PATH"] == f"{BIN}{os.pathsep}{PY}{os.pathsep}/evil"  # the user's PATH comes after convoy's
    assert (env["CONVOY_JOB_ID"], env["DEVICE_IP"]) == ("j1", "127.0.0.9")


def test_the_base_environment_is_not_modified() -> None:
    before = dict(BASE)
    build({"test_data": {"env": {"X": "1"}}}, device_ip="h")
    assert before == BASE


def test_no_redis_url_or_password_reaches_a_test_command() -> None:
    """The lava-* commands ask the job's relay: nothing in a job's environment names Redis or its password."""
    base = {**BASE, "AWS_SECRET_ACCESS_KEY": "k", "CELERY_BROKER": URL, "MY_PASS": "s3cret", "PLAIN": "1",
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "TERM": "xterm", "USER": "root",
            "LOGNAME": "root", "LC_MESSAGES": URL}
    for env in (command_env(base, {}, job_id="j", ssh_bin=BIN, device_ip="h", secrets=secrets_of(URL, None)),
                command_env(base, {}, job_id="p", ssh_bin=BIN, device_ips=["a"], group_id="p",
                            secrets=secrets_of(URL))):
        assert not [k for k, v in env.items() if "s3cret" in v or "redis://" in v or k == "CONVOY_REDIS_URL"]
    assert secrets_of("redis://:ab@h/0") == ["redis://:ab@h/0"]  # too short to look for on its own


def test_only_the_allow_list_of_the_worker_environment_is_passed_on() -> None:
    """Locale, time zone, terminal and user name pass; nothing else of the worker's (its state directory,
    git configuration, cloud credentials, its HOME and PATH)."""
    base = {**BASE, "AWS_SECRET_ACCESS_KEY": "k", "PLAIN": "1", "CONVOY_STATE_DIR": "/var/lib/convoy",
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "LANG": "C.UTF-8", "LC_ALL": "C",
            "TZ": "UTC", "TERM": "xterm", "USER": "root", "LOGNAME": "root", "PYTHONPATH": "/w"}
    env = command_env(base, {}, job_id="j", ssh_bin=BIN, python_bin=PY, work_dir=JOB, device_ip="h")
    assert env == {"PATH": f"{BIN}{os.pathsep}{PY}{os.pathsep}{SYSTEM_PATH}", "HOME": "/job",
                   "TMPDIR": "/job/tmp", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC", "TERM": "xterm",
                   "USER": "root", "LOGNAME": "root", "CONVOY_JOB_ID": "j", "TEST_USERNAME": "ubuntu",
                   "DEVICE_IP": "h"}


def test_the_member_default_multinode_timeout() -> None:
    assert multinode_timeout({}) is None
    assert multinode_timeout({"timeouts": {"multinode": 30}}) == 30.0


def test_multinode_settings_and_private_cache_files(tmp_path: Path) -> None:
    assert multinode_env({}) == {}
    assert multinode_env({"timeouts": {"multinode": 0}}) == {}
    job_dir = tmp_path / "job"
    assert multinode_files(job_dir, {"CONVOY_GROUP_ID": "p"}) == {
        CACHE_FILE: job_dir / "multinode" / "cache.txt",
        NETWORK_CACHE_FILE: job_dir / "multinode" / "network-cache.txt"}
    assert multinode_files(job_dir, {}) == {}  # not in a group
    assert multinode_files(job_dir, {"CONVOY_GROUP_ID": "p", "CONVOY_MULTINODE_CACHE": "/x"}) == {}
