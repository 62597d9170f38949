"""Artifacts and job directories end to end: what test_cmds leave in artifacts/ reaches the job's record
(from the device's worker for a device job, from the coordinator for the parent), ``convoy artifacts``
writes it, and every host's heartbeat removes old job directories of final jobs, never a running job's.

Real Redis, real workers, real SSH devices, the real CLI.  The job directories are removed before
``convoy artifacts`` runs: what it writes comes from Redis, as on hosts that share no files.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid

import pytest

from convoy.config.settings import load_settings
from convoy.coordinator.api import cancel_job, job_artifacts, job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from helpers import CONVOY, unique_queue, wait_for, wait_for_state

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120

WRITE_ARTIFACTS = ("pwd\nmkdir -p artifacts/logs\necho \"report of $CONVOY_JOB_ID\" > artifacts/report.txt\n"
                   "printf 'deep' > artifacts/logs/deep.log")


def convoy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CONVOY, *args], capture_output=True, text=True, timeout=60, env=dict(os.environ))


def archive_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return sorted(tar.getnames())


def note(job_id: str) -> str:
    return get_store().fields([job_id], "artifacts")[0]["artifacts"] or ""


def test_device_job_artifacts_reach_its_record_and_convoy_artifacts_writes_them(start_cluster, tmp_path):
    queue = unique_queue("art")
    start_cluster({queue: 1})
    job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": WRITE_ARTIFACTS}})
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert results["outcome"] == "pass", results
    job_dir = load_settings().jobs_dir / job_id
    assert results["test_output"].splitlines()[0] == str(job_dir)  # test_cmds' cwd: the job's directory
    data = job_artifacts(job_id)
    assert data is not None
    assert archive_names(data) == ["artifacts", "artifacts/logs", "artifacts/logs/deep.log", "artifacts/report.txt"]
    assert note(job_id).startswith("stored: 2 file(s)")
    assert "artifacts: stored: 2 file(s)" in results["test_output"]

    shutil.rmtree(job_dir)  # nothing local: the CLI reads the record
    out = tmp_path / "out"
    done = convoy("artifacts", job_id, str(out))
    assert done.returncode == 0, done.stderr
    assert (out / job_id / "artifacts" / "report.txt").read_text() == f"report of {job_id}\n"
    assert (out / job_id / "artifacts" / "logs" / "deep.log").read_text() == "deep"
    assert json.loads((out / job_id / "results.json").read_text())["job_id"] == job_id
    assert (out / job_id / "test.log").is_file()
    assert f"job {job_id}: " in done.stdout


def test_multi_job_parent_and_children_artifacts_all_arrive(start_cluster, tmp_path):
    q1, q2 = unique_queue("artp"), unique_queue("artp")
    start_cluster({q1: 1, q2: 1})
    child = {"test_cmds": "mkdir artifacts && echo \"child $CONVOY_JOB_ID\" > artifacts/child.txt"}
    parent = submit_job({
        "job_queue": "multi",
        "provision_data": {"jobs": [{"job_queue": q, "test_data": child} for q in (q1, q2)]},
        "test_data": {"test_cmds": "mkdir artifacts && cp job_list.json artifacts/ && echo parent > artifacts/p.txt"},
    })
    assert wait_for_job(parent, timeout=JOB_TIMEOUT) == "complete"
    assert job_results(parent)["outcome"] == "pass", job_results(parent)
    children = get_store().children(parent)
    assert len(children) == 2
    for job_id in [parent, *children]:
        shutil.rmtree(load_settings().jobs_dir / job_id, ignore_errors=True)

    out = tmp_path / "out"
    done = convoy("artifacts", parent, str(out))
    assert done.returncode == 0, done.stderr
    assert (out / parent / "artifacts" / "p.txt").read_text() == "parent\n"
    job_list = json.loads((out / parent / "artifacts" / "job_list.json").read_text())
    assert [entry["job_id"] for entry in job_list] == children
    for cid in children:
        assert (out / parent / "children" / cid / "artifacts" / "child.txt").read_text() == f"child {cid}\n"
    assert job_artifacts(children[0]) is not None and job_artifacts(parent) is not None


def test_a_job_leaving_no_artifacts_is_fine(start_cluster, tmp_path):
    queue = unique_queue("noart")
    start_cluster({queue: 1})
    job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": "echo nothing to keep"}})
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert results["outcome"] == "pass"
    assert job_artifacts(job_id) is None
    assert note(job_id).startswith("none")
    done = convoy("artifacts", job_id, str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "no artifacts" in done.stdout
    assert not (tmp_path / "out" / job_id / "artifacts").exists()
    assert (tmp_path / "out" / job_id / "results.json").is_file()


def test_oversize_artifacts_are_reported_not_stored(start_cluster, monkeypatch):
    monkeypatch.setenv("CONVOY_MAX_ARTIFACT_BYTES", "100000")  # the workers started below read it
    queue = unique_queue("bigart")
    start_cluster({queue: 1})
    job_id = submit_job({"job_queue": queue, "test_data": {
        "test_cmds": "mkdir artifacts && head -c 300000 /dev/urandom > artifacts/random.bin"}})
    assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
    results = job_results(job_id)
    assert job_artifacts(job_id) is None
    assert note(job_id).startswith("too large")
    assert "artifacts: too large" in results["test_output"]
    assert "CONVOY_MAX_ARTIFACT_BYTES" in results["test_output"]
    assert (load_settings().jobs_dir / job_id / "artifacts" / "random.bin").is_file()  # kept where it was made


def test_retention_removes_old_final_job_dirs_and_keeps_a_running_ones(start_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVOY_KEEP_JOB_DIRS", "1s")  # every worker's heartbeat sweeps with this
    q1, q2 = unique_queue("keep"), unique_queue("keep")
    start_cluster({q1: 1, q2: 1})
    jobs_dir = load_settings().jobs_dir
    running = submit_job({"job_queue": q1, "test_data": {  # release: a file in its own directory
        "test_cmds": "while [ ! -e release ]; do sleep 0.1; done"}})
    release = jobs_dir / running / "release"
    wait_for_state(running, "test", timeout=JOB_TIMEOUT)
    # the running job's directory exists before the others: when theirs are old enough to go, so is it
    finished = submit_job({"job_queue": q2, "test_data": {"test_cmds": "mkdir artifacts && echo x > artifacts/x"}})
    assert wait_for_job(finished, timeout=JOB_TIMEOUT) == "complete"
    unknown = jobs_dir / f"forgotten-{uuid.uuid4().hex}"  # a job Redis no longer knows
    unknown.mkdir()
    (unknown / "LOST").write_text("lost\n")
    wait_for(lambda: not (jobs_dir / finished).exists() and not unknown.exists(), 60,
             "the final job's and the unknown job's directories removed")
    assert (jobs_dir / running).is_dir(), "a running job's directory was removed"
    assert get_store().state(running) == "test"
    assert job_artifacts(finished) is not None  # its record and artifacts stay in Redis
    release.touch()
    assert wait_for_job(running, timeout=JOB_TIMEOUT) == "complete"
    wait_for(lambda: not (jobs_dir / running).exists(), 60, "the running job's directory removed once it ended")


def test_convoy_run_artifacts_includes_the_jobs_artifacts(tmp_path):
    """``convoy run --artifacts DIR`` writes the same layout as ``convoy artifacts`` (one writer)."""
    job = tmp_path / "job.yaml"
    job.write_text("job_queue: emulated\ntest_data:\n  test_cmds: |\n"
                   "    mkdir -p artifacts/sub\n    echo made on the device host > artifacts/sub/made.txt\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CONVOY_REDIS_URL", "CONVOY_STATE_DIR")}
    result = subprocess.run([CONVOY, "run", str(job), "--artifacts", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (job_dir,) = list((tmp_path / "out").iterdir())
    assert (job_dir / "artifacts" / "sub" / "made.txt").read_text() == "made on the device host\n"
    assert json.loads((job_dir / "results.json").read_text())["outcome"] == "pass"
    assert f"job {job_dir.name}: " in result.stdout


def test_artifacts_of_a_failed_and_of_a_cancelled_test_are_stored(start_cluster):
    q1, q2 = unique_queue("artfail"), unique_queue("artcancel")
    start_cluster({q1: 1, q2: 1})
    failed = submit_job({"job_queue": q1, "test_data": {
        "test_cmds": "mkdir artifacts\necho why > artifacts/why\nexit 3"}})
    cancelled = submit_job({"job_queue": q2, "test_data": {
        "test_cmds": "mkdir artifacts\necho partial > artifacts/partial\nwhile true; do sleep 0.1; done"}})
    jobs_dir = load_settings().jobs_dir
    wait_for(lambda: (jobs_dir / cancelled / "artifacts" / "partial").is_file(), JOB_TIMEOUT, "the test running")
    cancel_job(cancelled)
    assert wait_for_job(failed, timeout=JOB_TIMEOUT) == "complete"
    assert wait_for_job(cancelled, timeout=JOB_TIMEOUT) == "cancelled"
    assert job_results(failed)["test_status"] == 3
    for job_id, name in ((failed, "artifacts/why"), (cancelled, "artifacts/partial")):
        data = job_artifacts(job_id)
        assert data is not None and name in archive_names(data), job_id
