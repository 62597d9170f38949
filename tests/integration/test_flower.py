"""Flower sees convoy's tasks with readable names and custom states (allocated, ...).

A real Flower process on loopback reads the workers' task events from the
broker; the test reads them back through Flower's REST API.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from convoy.coordinator.api import cancel_job, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.workers.embedded.redis_server import free_port

from helpers import unique_queue, wait_for_state, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def flower(cluster_redis_url, tmp_path):
    port = free_port()
    env = {**os.environ, "CONVOY_REDIS_URL": cluster_redis_url, "FLOWER_UNAUTHENTICATED_API": "true"}
    log = (tmp_path / "flower.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "convoy.workers.celery_entry", "flower",
                             "--address=127.0.0.1", f"--port={port}"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _get(base, "/healthcheck") == "OK", 60), Path(log.name).read_text()[-2000:]
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _get(base: str, path: str):
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            body = response.read().decode()
    except OSError:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body


def test_flower_shows_named_tasks_and_the_allocated_state(start_cluster, flower):
    q1, q2 = unique_queue("flower1"), unique_queue("flower2")
    cluster = start_cluster({q1: 1, q2: 1})
    assert wait_until(lambda: len(_get(flower, "/api/workers?refresh=1") or {}) >= len(cluster.devices) + 1, 60)
    parent = submit_job({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": q1}, {"job_queue": q2}]},
                         "test_data": {"test_cmds": "sleep 600"}})
    wait_for_state(parent, "test")
    children = get_store().children(parent)

    def task(task_id: str) -> dict:
        return (_get(flower, "/api/tasks") or {}).get(task_id) or {}

    assert wait_until(lambda: all(task(c).get("state") == "ALLOCATED" for c in children), 30), \
        [task(c) for c in children]
    assert {task(c)["name"] for c in children} == {"convoy.device.child_job"}
    assert wait_until(lambda: task(f"{parent}.test").get("state") == "TEST", 30), task(f"{parent}.test")
    assert task(f"{parent}.collect").get("name") == "convoy.parent.collect"
    cancel_job(parent)
    assert wait_for_job(parent, timeout=120) == "cancelled"
    assert wait_until(lambda: task(f"{parent}.cleanup").get("state") in ("CANCELLED", "SUCCESS"), 30)
    workers = _get(flower, "/api/workers") or {}
    assert any(name.startswith(cluster.devices[0].name + "@") for name in workers), list(workers)
