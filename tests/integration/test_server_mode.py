"""Server mode: a user with only ``convoy server``'s address and a client's credentials does everything
with the real ``convoy`` CLI and ``submit_job()`` & co., and never reaches Redis.

The user's environment points ``CONVOY_REDIS_URL`` at a closed port, so any command that went to Redis
instead of the server would fail.  Covered: ``submit --poll`` of a multi job with live output of the parent
and each child, ``status``, ``results``, ``show``, ``jobs``, ``list-queues``, ``queue-status``, ``agents``,
``artifacts``, ``cancel``, ``reserve extend`` (within and above the client's limit) and ``release``; the
Python API's ``submit_job``/``wait_for_job``/``job_results``; another client and a forged token refused.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from convoy.config.settings import load_settings
from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.errors import JobNotFound, PermissionDenied, Unauthorized
from helpers import CONVOY, unique_queue, wait_for
from keyserver import KeyServer
from serverclient import Server, add_client, start_server

pytestmark = pytest.mark.integration
TIMEOUT = 120
#: nothing listens here: a command that went to Redis instead of the server fails
NO_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyServer]:
    """A key server with gh:alice (for reservations), in the environment before the cluster starts."""
    key = tmp_path / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   stdin=subprocess.DEVNULL)
    with KeyServer({("gh", "alice"): Path(f"{key}.pub").read_text()}) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
def server(cluster_redis_url: str, tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path)


def user_env(server: Server, client_id: str, secret: str, **extra: str) -> dict[str, str]:
    """A user's environment: the server's address and credentials; no usable Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVOY_")}
    return {**env, "CONVOY_REDIS_URL": NO_REDIS, "CONVOY_SERVER": server.base, "CONVOY_CLIENT_ID": client_id,
            "CONVOY_SECRET_KEY": secret, **extra}


def convoy(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONVOY, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_the_cli_does_everything_through_the_server(start_cluster, keys: KeyServer, server: Server,
                                                    tmp_path: Path) -> None:
    queue = unique_queue("srvmode")
    start_cluster({queue: 2})
    suffix = queue.rsplit("-", 1)[1]
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    env = user_env(server, alice, add_client(alice, "--max-reservation-time", f"{queue}=20m"))
    bob_env = user_env(server, bob, add_client(bob))

    job_file = tmp_path / "job.yaml"
    job_file.write_text(json.dumps({
        "job_queue": "multi",
        "provision_data": {"jobs": [
            {"job_queue": queue, "test_data": {"test_cmds": "echo child one says hi"}},
            {"job_queue": queue, "test_data": {"test_cmds": "echo child two says hi"}}]},
        "test_data": {"test_cmds": "echo parent sees $(jq length job_list.json) devices\n"
                                   "mkdir -p artifacts && echo kept > artifacts/kept.txt"}}))
    done = convoy(env, "submit", str(job_file), "--poll", timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.splitlines()[0]
    live = done.stdout
    assert "[job test] parent sees 2 devices" in live, live
    assert f"[{queue}#1 test] child one says hi" in live and f"[{queue}#2 test] child two says hi" in live, live
    assert f"job {job_id}: complete (pass)" in live

    assert convoy(env, "status", job_id).stdout.strip() == "complete"
    results = json.loads(convoy(env, "results", job_id).stdout)
    assert results["outcome"] == "pass" and len(results["children"]) == 2
    shown = json.loads(convoy(env, "show", job_id).stdout)
    assert shown["submitted_by"] == alice and len(shown["children"]) == 2
    assert job_id in convoy(env, "jobs").stdout
    assert queue in convoy(env, "list-queues").stdout
    status = convoy(env, "queue-status", queue)
    assert status.returncode == 0 and "waiting jobs: 0" in status.stdout, status.stderr
    agents = json.loads(convoy(env, "agents", "--json").stdout)
    assert sum(queue in a["queues"] for a in agents) == 2
    fetched = convoy(env, "artifacts", job_id, str(tmp_path / "out"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "out" / job_id / "artifacts" / "kept.txt").read_text() == "kept\n"

    # another client: the job does not exist for it; a forged token is refused
    for command in (["status", job_id], ["results", job_id], ["cancel", job_id]):
        refused = convoy(bob_env, *command)
        assert refused.returncode != 0 and f"no such job: {job_id}" in refused.stderr, refused.stderr
    assert job_id not in convoy(bob_env, "jobs").stdout
    forged = convoy({**env, "CONVOY_TOKEN": "forged"}, "status", job_id)
    assert forged.returncode != 0 and "invalid or expired token" in forged.stderr, forged.stderr
    assert "Traceback" not in forged.stderr

    # a reservation: extended within alice's 20 minutes, refused beyond, released
    reserve = tmp_path / "reserve.yaml"
    reserve.write_text(json.dumps({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": queue}]},
                                   "reserve_data": {"ssh_keys": ["gh:alice"], "timeout": "600"},
                                   "test_data": {"test_username": "ubuntu"}}))
    held = convoy(env, "submit", str(reserve)).stdout.strip()
    wait_for(lambda: convoy(env, "status", held).stdout.strip() == "reserve", TIMEOUT, f"{held} reserved")
    extended = convoy(env, "reserve", "extend", held, "5m")
    assert extended.returncode == 0 and "now expires at" in extended.stdout, extended.stderr
    too_long = convoy(env, "reserve", "extend", held, "1h")
    assert too_long.returncode != 0 and "error:" in too_long.stderr, too_long.stdout
    released = convoy(env, "release", held)
    assert released.returncode == 0, released.stderr
    wait_for(lambda: convoy(env, "status", held).stdout.strip() == "complete", TIMEOUT, f"{held} complete")

    # cancel a running job of one's own
    long = tmp_path / "long.yaml"
    long.write_text(json.dumps({"job_queue": queue, "test_data": {"test_cmds": "echo started; sleep 600"}}))
    running = convoy(env, "submit", str(long)).stdout.strip()
    wait_for(lambda: convoy(env, "status", running).stdout.strip() == "test", TIMEOUT, f"{running} testing")
    assert convoy(env, "cancel", running).returncode == 0
    wait_for(lambda: convoy(env, "status", running).stdout.strip() == "cancelled", TIMEOUT, f"{running} cancelled")


def test_the_python_api_goes_through_the_server(start_cluster, server: Server, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    queue = unique_queue("srvapi")
    start_cluster({queue: 1})
    suffix = queue.rsplit("-", 1)[1]
    carol = f"carol-{suffix}"
    for name, value in user_env(server, carol, add_client(carol, "--max-priority", f"{queue}=3")).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.server_url == server.base and settings.redis_url == NO_REDIS
    assert "secret" not in repr(settings).lower() or settings.secret_key not in repr(settings)

    job_id = submit_job({"job_queue": queue, "job_priority": 3, "test_data": {"test_cmds": "echo via the server"}})
    assert wait_for_job(job_id, timeout=TIMEOUT) == "complete"
    assert "via the server" in job_results(job_id)["test_output"]
    with pytest.raises(PermissionDenied, match="max_priority 3"):
        submit_job({"job_queue": queue, "job_priority": 4})
    with pytest.raises(JobNotFound):
        wait_for_job("00000000-0000-0000-0000-000000000000", timeout=5)
    monkeypatch.setenv("CONVOY_TOKEN", "forged")
    with pytest.raises(Unauthorized):
        job_results(job_id)
