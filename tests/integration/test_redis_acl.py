"""Redis with least privilege: a real redis-server loads the ACL file of ``convoy redis-acl``; device workers,
the coordinator and the submitting test process each use their role's user; real jobs run; what a role must
not do is refused (``NOPERM``), and no component met a refusal on the way."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib

from convoy.coordinator.api import cancel_job, job_results, job_status, submit_job, wait_for_job
from convoy.coordinator.state import acl
from convoy.coordinator.state.connection import get_store
from convoy.workers.embedded.cluster import EmbeddedCluster, emulated_devices
from convoy.workers.embedded.redis_server import RedisServer, find_redis_server, free_port
from helpers import unique_queue, wait_for_state

pytestmark = pytest.mark.integration
CONVOY = str(Path(sys.executable).parent / "convoy")
ADMIN_PASSWORD = "admin-pw-for-the-test"


def _redis_major() -> int:
    out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True).stdout
    version = out.split("v=", 1)[1].split()[0] if "v=" in out else "0"
    return int(version.split(".")[0])


@pytest.fixture
def acl_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Redis with the lab's ACL (and an admin for the test), its role URLs; the test process is a submitter."""
    if _redis_major() < 7:
        pytest.skip("key permissions by kind (%R~, %W~) need redis-server 7 or later")
    port = free_port()
    acl_file, urls_file = tmp_path / "users.acl", tmp_path / "urls.env"
    done = subprocess.run([CONVOY, "redis-acl", "--acl-file", str(acl_file), "--urls-file", str(urls_file),
                           "--redis-url", f"redis://127.0.0.1:{port}/0"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    urls = {line.split("=", 1)[0].removeprefix("CONVOY_REDIS_URL_").lower(): line.split("=", 1)[1]
            for line in urls_file.read_text().splitlines()}
    passwords = acl.parse_env_lines(urls_file.read_text())
    assert sorted(passwords) == sorted(acl.ROLES)
    for password in passwords.values():  # printed nowhere, stored only hashed in the ACL file
        assert password not in done.stdout + done.stderr and password not in acl_file.read_text()
    assert (urls_file.stat().st_mode & 0o777) == 0o600 and (acl_file.stat().st_mode & 0o777) == 0o600
    with acl_file.open("a") as out:  # the test's own admin (a deployment keeps one for operators)
        out.write(f"user admin on >{ADMIN_PASSWORD} ~* &* +@all\n")
    server = RedisServer(tmp_path / "redis", port=port, acl_file=acl_file, username="admin",
                         password=ADMIN_PASSWORD).start()
    monkeypatch.setenv("CONVOY_REDIS_URL", urls["submitter"])
    try:
        yield server, urls
    finally:
        admin = redis_lib.Redis.from_url(server.url, decode_responses=True)
        for entry in admin.acl_log(count=50):  # what was refused, for a failing test's report
            print(f"ACL LOG: {entry.get('username')} {entry.get('reason')} {entry.get('object')} "
                  f"({entry.get('context')})")
        admin.close()
        server.stop()


def _refused(client: redis_lib.Redis, *command: str) -> None:
    with pytest.raises(redis_lib.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_roles_run_jobs_with_only_their_permissions(acl_lab, tmp_path: Path):
    server, urls = acl_lab
    q = unique_queue("acl")
    cluster = EmbeddedCluster(tmp_path / "cluster", emulated_devices({q: 2}, prefix=f"acl{os.getpid()}"),
                              redis_url=server.url, worker_redis_url=urls["worker"],
                              coordinator_redis_url=urls["coordinator"], configure_process=False,
                              log=lambda m: print(f"[cluster] {m}"))
    with cluster:
        single = submit_job({"job_queue": q, "test_data": {"test_cmds": "echo single-ok",
                                                           "secrets": {"API_TOKEN": "acl-test-secret"}}})
        multi = submit_job({"job_queue": "multi", "test_data": {"test_cmds": "echo parent-ok"},
                            "provision_data": {"jobs": [
                                {"job_queue": q, "test_data": {"test_cmds": "lava-sync both && echo child-ok"}},
                                {"job_queue": q, "test_data": {"test_cmds": "lava-sync both && echo child-ok"}}]}})
        assert wait_for_job(single, timeout=120) == "complete", job_results(single)
        assert wait_for_job(multi, timeout=180) == "complete", job_results(multi)
        assert "single-ok" in job_results(single)["test_output"]
        assert "parent-ok" in job_results(multi)["test_output"]
        for child in get_store().children(multi):
            assert "child-ok" in job_results(child)["test_output"]
        # a submitter cancels a running multi job: its cleanup step goes to the coordinator's queue
        long = submit_job({"job_queue": "multi", "provision_data": {"jobs": [
            {"job_queue": q, "test_data": {"test_cmds": "sleep 300"}}]}})
        child = get_store().children(long)[0]
        wait_for_state(child, "test", timeout=120)
        cancel_job(long)
        assert wait_for_job(long, timeout=120) == "cancelled"
        assert job_status(child) == "cancelled"
        logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "cluster" / "logs").glob("*"))
        assert "NOPERM" not in logs and "no permissions" not in logs
        admin = redis_lib.Redis.from_url(server.url, decode_responses=True)
        refusals = [(e["username"], e["reason"], e["object"]) for e in admin.acl_log(count=100)]
        assert refusals == [], f"a role was refused what it needs: {refusals}"

    submitter = redis_lib.Redis.from_url(urls["submitter"], decode_responses=True)
    worker = redis_lib.Redis.from_url(urls["worker"], decode_responses=True)
    for client in (submitter, worker):
        _refused(client, "FLUSHALL")
        _refused(client, "FLUSHDB")
        _refused(client, "CONFIG", "GET", "*")
        _refused(client, "KEYS", "*")
        _refused(client, "ACL", "LIST")
        _refused(client, "SHUTDOWN")
        _refused(client, "SET", "somebody-else:key", "x")
    device = cluster.devices[0].name
    _refused(submitter, "SET", f"convoy:device:{device}:worker", "stolen")  # a device lock
    _refused(submitter, "HSET", f"convoy:device:{device}", "state", "idle")
    _refused(submitter, "LRANGE", "convoy.coordinator", "0", "-1")  # the broker's queues: not read
    _refused(submitter, "LRANGE", f"convoy.device.{device}", "0", "-1")
    _refused(submitter, "LPUSH", f"convoy.device.{device}", "forged task")
    _refused(submitter, "HGETALL", "unacked")
    _refused(submitter, "HGETALL", f"convoy.secret:job:{single}")  # writes secrets, reads none back
    assert worker.hget(f"convoy.secret:job:{single}", "API_TOKEN") == "acl-test-secret"
    _refused(submitter, "PUBLISH", "convoy:group:x:wake", "forged")  # no group's wake-ups
    _refused(submitter, "PUBLISH", "/0.celery.pidbox", "forged")  # no remote control of workers
    assert submitter.hget(f"convoy:job:{single}", "state") == "complete"  # what it may do
    with pytest.raises(redis_lib.RedisError, match="authenticat"):
        redis_lib.Redis(port=server.port).ping()  # the default user is off


def test_convoy_server_needs_only_its_role_and_users_need_no_redis(acl_lab, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    """``convoy server`` on the ``convoy-server`` user: clients, tokens, submit, follow, cancel, results, all
    without one refusal; users hold only the server's address and their client's credentials."""
    from serverclient import add_client, start_server

    server, urls = acl_lab
    q = unique_queue("aclsrv")
    cluster = EmbeddedCluster(tmp_path / "cluster", emulated_devices({q: 1}, prefix=f"acs{os.getpid()}"),
                              redis_url=server.url, worker_redis_url=urls["worker"],
                              coordinator_redis_url=urls["coordinator"], configure_process=False,
                              log=lambda m: print(f"[cluster] {m}"))
    monkeypatch.setenv("CONVOY_REDIS_URL", urls["server"])  # the server host's admin commands and the server
    with cluster:
        secret = add_client("erin", "--max-priority", f"{q}=2")
        front = start_server(tmp_path)
        http = next(front)
        try:
            monkeypatch.setenv("CONVOY_REDIS_URL", "redis://127.0.0.1:1/0")  # the user reaches no Redis
            for name, value in {"CONVOY_SERVER": http.base, "CONVOY_CLIENT_ID": "erin",
                                "CONVOY_SECRET_KEY": secret}.items():
                monkeypatch.setenv(name, value)
            job = submit_job({"job_queue": "multi", "job_priority": 2, "provision_data": {"jobs": [
                {"job_queue": q, "test_data": {"test_cmds": "echo via-server-ok",
                                                "secrets": {"TOKEN": "acl-server-secret"}}}]}})
            assert wait_for_job(job, timeout=180) == "complete", job_results(job)
            child = job_results(job)["children"][0]["job_id"]
            assert "via-server-ok" in job_results(child)["test_output"]
            long = submit_job({"job_queue": q, "test_data": {"test_cmds": "sleep 300"}})
            cancel_job(long)
            assert wait_for_job(long, timeout=120) == "cancelled"
        finally:
            front.close()
        admin = redis_lib.Redis.from_url(server.url, decode_responses=True)
        refusals = [(e["username"], e["reason"], e["object"]) for e in admin.acl_log(count=100)]
        assert refusals == [], f"a role was refused what it needs: {refusals}"

    as_server = redis_lib.Redis.from_url(urls["server"], decode_responses=True)
    _refused(as_server, "HGETALL", f"convoy.secret:job:{child}")  # the server stores secrets, reads none
    _refused(as_server, "LRANGE", f"convoy.device.{cluster.devices[0].name}", "0", "-1")
    _refused(as_server, "SET", f"convoy:device:{cluster.devices[0].name}:worker", "stolen")
    _refused(as_server, "FLUSHALL")
    _refused(as_server, "KEYS", "*")
    assert as_server.scard("convoy:clients") == 1  # its own records
    submitter = redis_lib.Redis.from_url(urls["submitter"], decode_responses=True)
    # a lab-side submitter reads records (a client's secret only as its scrypt hash) but can neither make
    # itself an admin nor forge a token
    _refused(submitter, "HSET", "convoy:client:erin", "admin", "1")
    _refused(submitter, "SET", "convoy:token:access:forged", "erin")
