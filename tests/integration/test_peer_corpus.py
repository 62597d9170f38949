"""LAVA's own MultiNode job files (tests/data/peer_jobs/lava), run unchanged on sandboxed emulated devices.

Each file runs on a cluster of its own whose devices carry the device types and tags its roles name.
Their ``from: git`` definitions (``git://`` and ``http://git.linaro.org/lava-team/lava-functional-tests.git``)
are served from a local copy of ``tests/data/peer_jobs/lava/lava-functional-tests`` (or the shared
corpus) through git's ``url.<base>.insteadOf`` (``GIT_CONFIG_GLOBAL``, inherited by the workers), as a
lab without internet would mirror them; the devices install packages from the lab's own apt repository
(``config.packages``, built by :mod:`labpackages`).  Every file ends ``complete`` with every MultiNode call
answered; the only failed cases are those that need what no lab has here (listed with the reason).
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
from labpackages import lab_repository

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "peer_jobs" / "lava"
SHARED = Path("/work/shared/peer-jobs/lava")
UPSTREAMS = ("git://git.linaro.org/lava-team/", "http://git.linaro.org/lava-team/")
#: a role's device that must hold a fixed lab address (its definitions announce it)
FIXED_ADDRESSES = {"qemu-ssh-guest": {"qemu": "10.15.0.15"}}
#: the files that run: each ends complete with every MultiNode call answered
RUN = ["first-multinode-job", "second-multinode-job", "kvm-multinode", "bbb-bbb-group", "mustang-ssh-guest",
       "multinode-iperf-api", "qemu-ssh-guest"]
#: what the lab's package repository holds: what the files install (their other deps are in the image)
LAB_PACKAGES = ["apache2", "iperf", "openssh-server"]
#: the cases each file fails here, by member, and why (in a LAVA lab without them they would fail too)
EXPECTED_FAILURES: dict[str, dict[str, list[str]]] = {
    "mustang-ssh-guest": {
        # each guest lists LAVA's overlay tarball at /<job id>-overlay*.tar.gz, which LAVA's dispatcher
        # leaves on the host device and convoy does not (its overlay is unpacked in ~/lava-<job id>/)
        **{f"guest-{n}": ["lava/1_ssh-client"] for n in range(3)},
        # scripts/nfs-dns.sh is not in lava-functional-tests, and resolv then finds no /etc/resolv.conf;
        # singlenode-advanced's install asks for realpath, which today's Debian no longer packages
        # (coreutils carries it): apt-get refuses the whole install, as it would on a LAVA device
        "host-3": ["2_nfs-dns/nfs-dns", "2_nfs-dns/resolv", "lava/3_singlenode-advanced"],
    },
    # lava-test-shell/single-node/singlenode02.yaml is not in lava-functional-tests: that definition
    # fails one case of its own and the guests' other definitions run
    "qemu-ssh-guest": {f"guest-{n}": ["1_singlenode-intermediate/fetch-definition"] for n in (1, 2)},
}
#: files where a definition stops on a failing step (listed above as the failed lava/<definition> case)
STOPPED_DEFINITIONS = {"mustang-ssh-guest"}
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


@pytest.fixture(scope="module")
def lab_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab_repository(tmp_path_factory.mktemp("lab-packages"), LAB_PACKAGES)


def devices_for(name: str, job: dict, packages: Path) -> list[DeviceConfig]:
    """Emulated devices of each device type the roles name, each carrying every tag asked of its type."""
    counts: dict[str, int] = defaultdict(int)
    tags: dict[str, set[str]] = defaultdict(set)
    for child in job["provision_data"]["jobs"]:
        if child.get("connection") == "ssh":
            continue
        counts[child["device_type"]] += 1  # children are already expanded by count
        tags[child["device_type"]] |= set(child.get("tags") or ())
    devices = emulated_devices(dict(counts), prefix=f"peer-{abs(hash(name)) % 10000}", tags=tags,
                               extra_config={"packages": str(packages)})
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


def run_peer_job(name: str, start_cluster,
                 packages: Path) -> tuple[str, str, dict[str, str], dict[str, dict[str, str]]]:
    """Run one corpus file on its own devices: its state, outcome, each member's test output and cases."""
    start_cluster(devices=devices_for(name, load_job(CORPUS / f"{name}.yaml"), packages))
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


@pytest.mark.parametrize("name", RUN)
def test_a_peer_job_runs_unchanged_and_every_multinode_call_succeeds(name, start_cluster, mirror, lab_packages):
    state, outcome, outs, table = run_peer_job(name, start_cluster, lab_packages)
    assert state == "complete", outs
    # a definition that stops (not a failed case) fails its member's test phase, as in LAVA
    assert outcome == ("fail" if name in STOPPED_DEFINITIONS else "pass"), outs
    assert all(table.values()), table  # every member recorded its cases
    calls = {member: {case: result for case, result in found.items() if case.startswith("lava/multinode-")}
             for member, found in table.items()}
    assert all(r == "pass" for found in calls.values() for r in found.values()), calls
    assert not any("MultiNode call failed" in out or "timed out" in out for out in outs.values()), outs
    failed = {member: sorted(c for c, r in found.items() if r != "pass") for member, found in table.items()}
    assert {member: cases for member, cases in failed.items() if cases} == EXPECTED_FAILURES.get(name, {}), outs
    if name in FIXED_ADDRESSES:  # the host's device holds the address its definition announces
        assert "on 10.15.0.15\n" in outs["host-0"], outs["host-0"]


@pytest.mark.parametrize("name", REFUSED)
def test_a_peer_job_that_needs_docker_is_refused_naming_docker(name):
    with pytest.raises(JobValidationError) as info:
        load_job(CORPUS / f"{name}.yaml")
    assert info.value.errors and all("docker" in e.message for e in info.value.errors), info.value.errors
