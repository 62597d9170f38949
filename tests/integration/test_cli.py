"""The real ``convoy`` command: bad input is refused before anything starts, jobs can be followed.

Bad job files must give a clear message with the field path from
``submit_job()``, ``convoy validate``, ``convoy submit`` and ``convoy run``,
exit non-zero within seconds, run and queue nothing, and never show a
traceback.
"""
from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from convoy.coordinator.state import keys
from convoy.coordinator.api import submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.errors import JobValidationError

from helpers import CONVOY, REPO, unique_queue

pytestmark = pytest.mark.integration
BAD_DIR = REPO / "tests" / "data" / "bad_jobs"
CLI_TIMEOUT = 30


def bad_files(tmp_dir: Path) -> list[Path]:
    """The committed broken job files plus the ones too big or too nasty to commit."""
    files = sorted(BAD_DIR.glob("*.yaml"))
    huge = tmp_dir / "huge.yaml"
    huge.write_text("job_queue: emulated\nprovision_data:\n" + "".join(f"  k{i}: {'x' * 100}\n" for i in range(60000)))
    bomb = tmp_dir / "alias-bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("job_queue: emulated")
    bomb.write_text("\n".join(lines) + "\n")
    tag = tmp_dir / "python-tag.yaml"
    tag.write_text("job_queue: !!python/object/apply:os.system ['touch /tmp/convoy-pwned']\n")
    not_mapping = tmp_dir / "list.yaml"
    not_mapping.write_text("- job_queue: emulated\n")
    broken = tmp_dir / "broken.yaml"
    broken.write_text("job_queue: [emulated\n")
    return files + [huge, bomb, tag, not_mapping, broken]


def run_cli(*args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([CONVOY, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def job_count() -> int:
    return get_store().client.zcard(keys.JOBS)


@pytest.fixture(scope="module")
def bad_job_files(tmp_path_factory) -> list[Path]:
    return bad_files(tmp_path_factory.mktemp("bad"))


def test_there_are_at_least_a_dozen_bad_inputs(bad_job_files):
    assert len(bad_job_files) >= 12


@pytest.mark.parametrize("command", ["validate", "submit", "run"])
def test_every_bad_file_is_refused_by_the_cli_before_anything_runs(cluster_redis_url, bad_job_files, command):
    before = job_count()
    with ThreadPoolExecutor(max_workers=4) as pool:  # independent processes: four at a time
        results = list(pool.map(lambda p: run_cli(command, str(p)), bad_job_files))
    for path, result in zip(bad_job_files, results, strict=True):
        assert result.returncode != 0, f"{command} accepted {path.name}"
        assert "Traceback" not in result.stderr + result.stdout, f"{command} {path.name}: traceback shown"
        assert "error:" in result.stderr and path.name not in ("",), result.stderr
        assert "convoy run: starting" not in result.stdout, f"run started a cluster for {path.name}"
    assert job_count() == before, "a bad job was recorded"
    assert not Path("/tmp/convoy-pwned").exists()


def test_submit_job_raises_with_every_field_path_and_queues_nothing(cluster_redis_url, bad_job_files):
    before = job_count()
    for path in bad_job_files:
        with pytest.raises(JobValidationError) as info:
            submit_job(path)
        assert info.value.errors, path.name
    assert job_count() == before


def test_several_errors_are_reported_at_once_with_their_paths(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("job_queue: multi\nallocation_timeout: -5\nprovision_data:\n  jobs:\n"
                    "    - provision_data: {}\n    - job_queue: 12\nfoo: bar\n")
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    for expected in ("allocation_timeout", "provision_data.jobs[0].job_queue", "provision_data.jobs[1].job_queue",
                     "foo"):
        assert expected in result.stderr, f"{expected} missing from: {result.stderr}"


def test_unknown_queue_is_refused_with_the_known_ones(start_cluster, tmp_path):
    queue = unique_queue("known")
    start_cluster({queue: 1}, coordinator=False)
    path = tmp_path / "job.yaml"
    path.write_text("job_queue: nobody-serves-this\n")
    before = job_count()
    result = run_cli("submit", str(path))
    assert result.returncode == 2
    assert "job_queue: no device serves queue 'nobody-serves-this'" in result.stderr
    assert queue in result.stderr
    assert job_count() == before


def test_unreachable_redis_is_a_clear_error(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("job_queue: emulated\n")
    result = run_cli("submit", str(path), env={"CONVOY_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode != 0
    assert "cannot reach redis://127.0.0.1:1/0" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_results_show_and_poll_work_on_parents_and_children(start_cluster):
    q1, q2 = unique_queue("cli1"), unique_queue("cli2")
    start_cluster({q1: 1, q2: 1})
    parent = submit_job({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": q1}, {"job_queue": q2}]},
                         "test_data": {"test_cmds": "echo parent-says-hi"}})
    poll = run_cli("poll", parent, timeout=120)
    assert poll.returncode == 0, poll.stderr
    assert "[job test] parent-says-hi" in poll.stdout
    assert f"[{q1}#1] state: allocated" in poll.stdout and f"[{q2}#2] state: cancelled" in poll.stdout
    assert wait_for_job(parent, timeout=10) == "complete"
    children = get_store().children(parent)
    assert run_cli("status", parent).stdout.strip() == "complete"
    assert run_cli("status", children[0]).stdout.strip() == "cancelled"
    results = json.loads(run_cli("results", parent).stdout)
    assert results["test_status"] == 0 and [c["job_id"] for c in results["children"]] == children
    child_results = json.loads(run_cli("results", children[1]).stdout)
    assert child_results["parent_job_id"] == parent and child_results["provision_status"] == 0
    shown = json.loads(run_cli("show", parent).stdout)
    assert shown["children"] == children and shown["document"]["job_queue"] == "multi"
    assert parent in run_cli("jobs").stdout


def test_queue_listing_and_agents(start_cluster):
    queue = unique_queue("listing")
    cluster = start_cluster({queue: 2}, coordinator=False)
    listing = run_cli("list-queues").stdout
    assert any(line.startswith(queue) and "devices online 2/2" in line for line in listing.splitlines()), listing
    status = run_cli("queue-status", queue)
    assert status.returncode == 0
    assert status.stdout.count("idle") == 2 and "waiting jobs: 0" in status.stdout
    agents = run_cli("agents").stdout
    for device in cluster.devices:
        assert device.name in agents
    assert run_cli("queue-status", "no-such-queue").returncode != 0


def test_submit_with_poll_follows_the_job_and_exits_with_its_outcome(start_cluster, tmp_path):
    queue = unique_queue("submitpoll")
    start_cluster({queue: 1})
    path = tmp_path / "job.yaml"
    path.write_text(f"job_queue: {queue}\ntest_data:\n  test_cmds: echo polled; exit 5\n")
    result = run_cli("submit", str(path), "--poll", timeout=120)
    assert result.returncode == 1
    assert "[job test] polled" in result.stdout
    assert "complete (fail)" in result.stdout
