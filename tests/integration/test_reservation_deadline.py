"""A reservation is a durable deadline, not a waiting thread: other jobs run meanwhile; extend and release.

A real ``convoy coordinator --concurrency 2`` (two threads for parent steps)
and a real ``convoy worker`` with four emulated devices: a one-hour
reservation holds two of them, and ten other multi jobs run to completion on
the other two meanwhile, through the same two coordinator threads.  Then the
reservation is extended (and refused beyond the deployment's limit) and
released early through the real CLI.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.workers.embedded.cluster import emulated_devices
from convoy.workers.embedded.lab import Lab
from helpers import CONVOY, unique_queue
from keyserver import KeyServer

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 180


@pytest.fixture
def lab(cluster_redis_url: str, tmp_path: Path):
    key = tmp_path / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   stdin=subprocess.DEVNULL)
    queues = {unique_queue(name): 1 for name in ("held-a", "held-b", "free-a", "free-b")}
    devices = emulated_devices(queues, prefix=f"rd-{os.getpid()}")
    with KeyServer({("gh", "alice"): Path(f"{key}.pub").read_text()}) as keys:
        lab = Lab(cluster_redis_url, tmp_path / "lab", devices, env=keys.env())
        try:
            yield lab.start(concurrency=2)
        finally:
            lab.stop()


def convoy(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CONVOY, *args], env=lab.env, capture_output=True, text=True, timeout=60)


def test_a_one_hour_reservation_holds_no_thread_and_moves_with_extend_and_release(lab: Lab):
    held, free = lab.queues[:2], lab.queues[2:]
    reservation = submit_job({"job_queue": "multi",
                              "provision_data": {"jobs": [{"job_queue": q} for q in held]},
                              "reserve_data": {"ssh_keys": ["gh:alice"], "timeout": "1h"}})
    lab.wait_job(reservation, lambda: bool(lab.field(reservation, "reserve_until")), what="the reservation")
    until = float(str(lab.field(reservation, "reserve_until")))

    # ten multi jobs through the same two coordinator threads while the reservation holds
    others = [submit_job({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": q} for q in free]},
                          "test_data": {"test_cmds": "test -s job_list.json"}}) for _ in range(10)]
    for job_id in others:
        assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
        assert job_results(job_id)["outcome"] == "pass", job_results(job_id).get("message")
    assert lab.store.state(reservation) == "reserve"

    shown = json.loads(convoy(lab, "show", reservation).stdout)
    assert shown["reservation_expires"]

    extended = convoy(lab, "reserve", "extend", reservation, "2h")
    assert extended.returncode == 0, extended.stderr
    assert "now expires at" in extended.stdout
    assert float(str(lab.field(reservation, "reserve_until"))) == pytest.approx(until + 7200, abs=1)
    assert "reservation extended by 7200s" in lab.store.output(reservation, "reserve")

    # 1 h + 2 h + 4 h is beyond the default 6 h limit: refused, naming the limit, nothing changed
    refused = convoy(lab, "reserve", "extend", reservation, "4h")
    assert refused.returncode != 0
    assert "a reservation lasts at most 21600s here (CONVOY_MAX_RESERVATION)" in refused.stderr
    assert "it can grow by 10800s more" in refused.stderr
    assert float(str(lab.field(reservation, "reserve_until"))) == pytest.approx(until + 7200, abs=1)

    released = convoy(lab, "release", reservation)
    assert released.returncode == 0, released.stderr
    assert wait_for_job(reservation, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(reservation)
    assert results["outcome"] == "pass" and "reservation released by convoy release" in results["reserve_output"]
    again = convoy(lab, "release", reservation)
    assert again.returncode != 0 and "holds no reservation now (it is complete)" in again.stderr
    lab.wait_idle()
