"""Each job's own SSH keys: trusted by exactly its devices while it runs, gone from them after cleanup.

The coordinator runs as its own process with its own state directory (its own
agent key), the devices' workers with theirs, as on two hosts: the parent's
commands reach the devices with the parent's key, which the children's
workers authorised, never with a host's agent key.  A ``noprovision``
machine, which no cleanup reinstalls, is left trusting what it trusted before
(tests/integration/test_reservation.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from convoy.connectors.emulated.image import device_paths
from convoy.connectors.sshkeys import ensure_agent_key, fingerprint
from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from helpers import assert_all_released, unique_queue
from test_reservation import JOB_TIMEOUT

pytestmark = pytest.mark.integration


def authorized(home: Path) -> list[str]:
    return (home / ".ssh" / "authorized_keys").read_text().split("\n")[:-1]


def test_the_parents_and_childrens_commands_use_the_jobs_own_keys(start_cluster, coordinator_process, tmp_path):
    queue = unique_queue("keys")
    cluster = start_cluster({queue: 2}, coordinator=False)
    homes = [device_paths(d, cluster.state_dir).home for d in cluster.devices]
    agent = Path(f"{ensure_agent_key(cluster.state_dir / 'keys')}.pub").read_text().strip()
    count = "wc -l < .ssh/authorized_keys"
    parent = submit_job({
        "job_queue": "multi",
        "provision_data": {"jobs": [{"job_queue": queue, "test_data": {"test_cmds": f"ssh $DEVICE_IP '{count}'"}},
                                    {"job_queue": queue}]},
        "test_data": {"test_cmds": "grep IdentityFile \"$(dirname \"$(command -v ssh)\")/../config\"\n"
                                   f"for ip in $DEVICE_IP_1 $DEVICE_IP_2; do ssh $ip '{count}'; done"}})
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(parent)
    assert results["outcome"] == "pass", results
    # on the coordinator, the parent's own key (made in its job directory there) ...
    key = tmp_path / "coordinator" / "jobs" / parent / ".convoy-key" / "id_ed25519"
    assert f"IdentityFile \"{key}\"" in results["test_output"], results["test_output"]
    # ... while each device trusted its host's agent key, its child's key and the parent's: three lines
    assert results["test_output"].endswith("\n3\n3\n"), results["test_output"]
    store = get_store()
    first = store.children(parent)[0]  # its own test_cmds, with its own key
    assert store.output(first, "test").strip() == "3", store.output(first, "test")
    records = [store.get(c) for c in store.children(parent)]
    assert len({r["job_key"] for r in records}) == 2 and all(r["parent_key"] for r in records)
    assert fingerprint(records[0]["parent_key"]) == records[0]["parent_key_fingerprint"]
    assert_all_released(parent)
    for home in homes:  # cleanup: the agent key alone
        assert [" ".join(line.split()[:2]) for line in authorized(home)] == [" ".join(agent.split()[:2])]
    # no job key pair is left on either "host"
    assert not list(tmp_path.glob("**/.convoy-key/id_ed25519"))
