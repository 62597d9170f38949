"""Many long waits through ``convoy server`` stay flat: a hundred clients waiting on a job hold no thread
and no Redis connection each (one watcher serves them all, ``state/finals.py``), the server keeps
answering other requests meanwhile, and every waiter hears the job end.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from convoy.coordinator.state.connection import get_store
from helpers import unique_queue, wait_for
from serverclient import Server, add_client, start_server

pytestmark = pytest.mark.integration
WAITERS = 100
#: anyio's default thread pool, where the server runs its blocking calls
POOL = 40
GATE = "while [ ! -e go ]; do sleep 0.1; done; echo released"


@pytest.fixture
def server(cluster_redis_url: str, tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path)


def server_process(server: Server) -> psutil.Process:
    port = urlsplit(server.base).port
    (pid,) = {c.pid for c in psutil.net_connections(kind="tcp") if c.laddr and c.laddr.port == port
              and c.status == psutil.CONN_LISTEN}
    return psutil.Process(pid)


def test_a_hundred_waiters_hold_no_thread_each_and_all_hear_the_end(start_cluster, server: Server) -> None:
    q = unique_queue("waits")
    cluster = start_cluster({q: 1})
    client_id = f"w-{q.rsplit('-', 1)[1]}"
    token = server.login(client_id, add_client(client_id))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    status, body = server.call("POST", "/api/v1/jobs", {"job_queue": q, "test_data": {"test_cmds": GATE}},
                               token=token)
    assert status == 200, body
    job_id = body["job_id"]
    wait_for(lambda: server.call("GET", f"/api/v1/jobs/{job_id}/status", token=token)[1]["state"] == "test", 120,
             "the job testing")
    # a short wait on a running job answers its state when the time is up
    short = httpx.get(f"{server.base}/api/v1/jobs/{job_id}/wait", params={"timeout": 0.5}, headers=headers,
                      timeout=30)
    assert short.status_code == 200 and short.json()["state"] == "test"

    proc = server_process(server)
    threads_before = proc.num_threads()
    redis = get_store().client
    redis_clients_before = len(redis.client_list())
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def waiter() -> None:
        reply = httpx.get(f"{server.base}/api/v1/jobs/{job_id}/wait", params={"timeout": 60}, headers=headers,
                          timeout=120)
        with lock:
            answers.append(reply)

    threads = [threading.Thread(target=waiter) for _ in range(WAITERS)]
    for thread in threads:
        thread.start()
    try:
        watched_while_waiting(server, proc, token, job_id, threads_before, redis_clients_before, answers)
    finally:
        (cluster.state_dir / "jobs" / job_id / "go").touch()
        for thread in threads:
            thread.join(timeout=120)
    assert len(answers) == WAITERS
    assert {(a.status_code, a.json()["state"]) for a in answers} == {(200, "complete")}


def watched_while_waiting(server: Server, proc: psutil.Process, token: str, job_id: str, threads_before: int,
                          redis_clients_before: int, answers: list[httpx.Response]) -> None:
    redis = get_store().client
    port = urlsplit(server.base).port
    wait_for(lambda: sum(1 for c in proc.net_connections(kind="tcp") if c.laddr.port == port
                         and c.status == psutil.CONN_ESTABLISHED) >= WAITERS, 60, f"{WAITERS} waiters connected")
    # the server still answers everything else while they wait
    assert server.call("GET", f"/api/v1/jobs/{job_id}/status", token=token) == (200, {"job_id": job_id,
                                                                                      "state": "test"})
    assert not answers, "a wait answered before the job ended"
    # flat: no thread and no Redis connection per waiter.  The server's thread pool (anyio's, 40 threads at
    # most) ran each request's credential check, each with a pooled connection; the waits themselves hold
    # neither, so both stay within the pool's bound however many wait
    assert proc.num_threads() <= threads_before + POOL + 2 < threads_before + WAITERS, proc.num_threads()
    assert len(redis.client_list()) <= redis_clients_before + POOL + 2 < redis_clients_before + WAITERS
    assert sum(1 for c in redis.client_list() if c.get("name") == "convoy-server-finals") == 1
