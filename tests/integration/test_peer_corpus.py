"""LAVA's own MultiNode job files (tests/data/peer_jobs/lava), run unchanged on sandboxed emulated devices.

Each file runs on a cluster of its own whose devices carry the device types and tags its roles name.
Their ``from: git`` definitions (``git://`` and ``http://git.linaro.org/lava-team/lava-functional-tests.git``)
are served from a local copy of ``tests/data/peer_jobs/lava/lava-functional-tests`` (or the shared
corpus) through git's ``url.<base>.insteadOf`` (``GIT_CONFIG_GLOBAL``, inherited by the workers), as a
lab without internet would mirror them.  The jobs must end ``complete`` with every MultiNode call
answered; a case that needs the internet, a missing tool or real hardware fails as a test case only.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from convoy.config.devices import DeviceConfig
from convoy.config.jobs import load_job
from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.testcases import cases
from convoy.errors import JobValidationError
from convoy.workers.embedded.cluster import emulated_devices

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "peer_jobs" / "lava"
SHARED = Path("/work/shared/peer-jobs/lava")
UPSTREAMS = ("git://git.linaro.org/lava-team/", "http://git.linaro.org/lava-team/")
#: a role's device that must hold a fixed lab address (its definitions announce it)
FIXED_ADDRESSES = {"qemu-ssh-guest": {"qemu": "10.15.0.15"}}
#: files whose every case and MultiNode call passes on sandboxed emulated devices
PASSING = ["first-multinode-job", "kvm-multinode", "bbb-bbb-group"]
#: files that run to complete but fail as they would in a LAVA lab without the internet, those tools or
#: files: (member role, what its output shows); a MultiNode call then fails naming the member that failed
LIMITED = {
    # the server's apt-get install apache2 needs the internet: it stops before lava-send server_installed
    "second-multinode-job": ("server", "Temporary failure resolving"),
    # no iperf on the device (its apt-get needs the internet); the lab has no default route for
    # ``ip route get 8.8.8.8``: the server stops before lava-send server-ready
    "multinode-iperf-api": ("server", "iperf: not found"),
    # deploy authorize: ssh is not honoured: the host's first step ``ls -al /root/.ssh/`` fails, so it
    # never sends lava_start and the guests' delayed start fails
    "mustang-ssh-guest": ("host", "cannot access '/root/.ssh/'"),
    # lava-test-shell/single-node/singlenode02.yaml is not in the mirror: the guests' test action fails
    "qemu-ssh-guest": ("guest", "singlenode02.yaml' is not a file of the repository"),
}
REFUSED = ["docker-test-multinode", "jlink-multiple-flash-multinode"]


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare lava-functional-tests repository standing in for git.linaro.org's, by git's insteadOf."""
    source = CORPUS / "lava-functional-tests"
    if not source.is_dir():
        source = SHARED / "lava-functional-tests"
    if not source.is_dir():
        pytest.skip("no copy of lava-functional-tests")
    work, mirrors = tmp_path / "lft-work", tmp_path / "mirrors"
    shutil.copytree(source, work)
    config = tmp_path / "gitconfig"
    config.write_text(f'[url "{mirrors}/"]\n' + "".join(f"\tinsteadOf = {u}\n" for u in UPSTREAMS)
                      + "[user]\n\tname = t\n\temail = t@example.invalid\n[init]\n\tdefaultBranch = master\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))  # before the cluster starts: its workers inherit it
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    git("init", "-q", str(work))
    git("add", "-A", cwd=work)
    git("commit", "-qm", "lava-functional-tests", cwd=work)
    git("clone", "-q", "--bare", str(work), str(mirrors / "lava-functional-tests.git"))
    return mirrors


def devices_for(name: str, job: dict) -> list[DeviceConfig]:
    """Emulated devices of each device type the roles name, each carrying every tag asked of its type."""
    counts: dict[str, int] = defaultdict(int)
    tags: dict[str, set[str]] = defaultdict(set)
    for child in job["provision_data"]["jobs"]:
        if child.get("connection") == "ssh":
            continue
        counts[child["device_type"]] += 1  # children are already expanded by count
        tags[child["device_type"]] |= set(child.get("tags") or ())
    devices = emulated_devices(dict(counts), prefix=f"peer-{abs(hash(name)) % 10000}", tags=tags)
    fixed = FIXED_ADDRESSES.get(name, {})
    return [dataclasses.replace(d, config={**d.config, "address": fixed[d.device_type]})
            if d.device_type in fixed and d.name.endswith("-1") else d for d in devices]


def case_table(parent: str) -> dict[str, dict[str, str]]:
    """Every child's recorded test cases: ``{role-n: {suite/case: result}}``."""
    store = get_store()
    table: dict[str, dict[str, str]] = {}
    for n, child in enumerate(store.children(parent)):
        role = store.get(child)["role"]
        table[f"{role}-{n}"] = {f"{c['suite']}/{c['case']}": c["result"] for c in cases(store.client, child)}
    return table


def run_peer_job(name: str, start_cluster) -> tuple[str, str, dict[str, str], dict[str, dict[str, str]]]:
    """Run one corpus file on its own devices: its state, outcome, each member's test output and cases."""
    start_cluster(devices=devices_for(name, load_job(CORPUS / f"{name}.yaml")))
    parent = submit_job(CORPUS / f"{name}.yaml")
    state = wait_for_job(parent, timeout=600)
    store = get_store()
    outs = {f"{store.get(c)['role']}-{n}": store.output(c, "test") for n, c in enumerate(store.children(parent))}
    table, outcome = case_table(parent), job_results(parent)["outcome"]
    print(f"\n== {name}: {state}, outcome {outcome}")  # the per-file table, with -s
    for member, found in table.items():
        failed = sorted(k for k, v in found.items() if v != "pass")
        print(f"   {member}: {len(found) - len(failed)} passed, {len(failed)} failed: {failed}")
    return state, outcome, outs, table


@pytest.mark.parametrize("name", PASSING)
def test_a_peer_job_runs_unchanged_and_passes(name, start_cluster, mirror):
    state, outcome, outs, table = run_peer_job(name, start_cluster)
    assert state == "complete" and outcome == "pass", outs
    assert all(table.values()) and all(r == "pass" for found in table.values() for r in found.values()), table
    assert not any("MultiNode call failed" in out or "timed out" in out for out in outs.values()), outs


@pytest.mark.parametrize("name", sorted(LIMITED))
def test_a_peer_job_needing_what_the_lab_lacks_completes_failing_as_a_lava_lab_would(name, start_cluster, mirror):
    state, outcome, outs, table = run_peer_job(name, start_cluster)
    role, shown = LIMITED[name]
    assert state == "complete" and outcome == "fail", outs
    assert any(member.startswith(role) and shown in out for member, out in outs.items()), outs
    assert not any("timed out" in out for out in outs.values()), outs  # a failed member ends the waits at once
    assert any(table.values()), outs  # the cases that ran are recorded
    if name in FIXED_ADDRESSES:  # the host's device holds the address its definition announces
        assert "on 10.15.0.15\n" in outs["host-0"], outs["host-0"]


@pytest.mark.parametrize("name", REFUSED)
def test_a_peer_job_that_needs_docker_is_refused_naming_docker(name):
    with pytest.raises(JobValidationError) as info:
        load_job(CORPUS / f"{name}.yaml")
    assert info.value.errors and all("docker" in e.message for e in info.value.errors), info.value.errors
