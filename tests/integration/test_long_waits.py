"""Waits far longer than any socket timeout, with nothing going wrong: they just end normally.

Real workers, real Redis, no fault injected.  Every blocking Redis call
(``XREAD BLOCK`` of the parent and of ``wait_for_job``, the control streams,
the pub/sub wait of a ``lava-*`` command's relay) sits idle for tens of seconds here; none may
mistake the silence for a dead connection.  The lava-wait runs alongside the
job, so the whole file costs about one job's length.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convoy.coordinator.state import keys
from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.multinode import group as mn_group
from convoy.tasks.run.relay import MultiNodeRelay

from helpers import assert_all_released, unique_queue, wait_for, wait_for_state

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
#: the child's test outlasts the parent's by 10 s: the parent's test task then blocks on the
#: child's event stream with nothing arriving, longer than redis-py's default socket timeout
PARENT_TEST = "echo parent testing; sleep 40; echo parent done"
CHILD_TEST = "echo child testing; sleep 50; echo child done"


def lava(command: str, *args: str, socket: Path, cache: Path) -> subprocess.Popen[str]:
    """A ``lava-*`` command asking its job's relay (served on ``socket``), as in a job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVOY_", "DEVICE_IP"))}
    env.update(CONVOY_MULTINODE_SOCKET=str(socket), CONVOY_MULTINODE_CACHE=str(cache))
    return subprocess.Popen([str(BIN / command), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_long_multi_job_and_a_long_lava_wait_both_end_normally(start_cluster, redis_client,
                                                                  tmp_path):
    # The lava-wait starts first; its message is sent only after the whole job has ended,
    # so it has waited at least the job's length (~50 s) when the send comes.
    group = "long-wait"
    mn_group.create_group(redis_client, group, {"1": "waiter", "2": "sender"}, timeout=600)
    relays = [MultiNodeRelay(redis_client, group_id=group, job_id=job, role=None, timeout=None, cancel=None)
              .serve(tmp_path / f"job{job}" / "relay.sock") for job in ("1", "2")]
    for server in relays:
        server.start()
    cache = tmp_path / "cache.txt"
    waiter = lava("lava-wait", "--timeout", "300", "after-the-job", socket=relays[0].path, cache=cache)
    wait_for(lambda: redis_client.pubsub_numsub(keys.group_channel(group))[0][1] == 1, timeout=30,
             what="lava-wait subscribed")

    queue = unique_queue("long")
    start_cluster({queue: 1})
    parent = submit_job({"job_queue": "multi", "test_data": {"test_cmds": PARENT_TEST},
                         "provision_data": {"jobs": [{"job_queue": queue, "provision_data": {"distro": "jammy"},
                                                      "test_data": {"test_cmds": CHILD_TEST}}]}})
    wait_for_state(parent, "test", timeout=60)
    assert wait_for_job(parent, 90) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "pass", results
    assert "parent done" in results["test_output"]
    (child,) = results["children"]
    assert "child done" in job_results(child["job_id"])["test_output"]
    assert_all_released(parent)

    assert waiter.poll() is None, waiter.communicate()
    sender = lava("lava-send", "after-the-job", "note=sent late", socket=relays[1].path,
                  cache=tmp_path / "sender-cache.txt")
    assert sender.communicate(timeout=30) == ("", "")
    assert sender.returncode == 0
    out, err = waiter.communicate(timeout=30)
    assert (waiter.returncode, out, err) == (0, "", "")
    assert cache.read_text() == "note=sent late\n"
    for server in relays:
        server.stop()
