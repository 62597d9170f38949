"""A job's commands as a uid of their own: what the namespace must show them, and a real run where allowed."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from convoy.tasks.run import jobuser
from convoy.tasks.run.jobuser import JobUser, hidden_dirs
from convoy.tasks.run.script import run_script, script_command

NOWHERE = Path("/nonexistent-private-tmp")


def test_a_directory_others_cannot_enter_is_replaced_showing_only_what_is_needed() -> None:
    closed = {Path("/root"), Path("/srv/lab/private")}

    def mode(path: Path) -> int:
        return 0o40700 if path in closed else 0o40755

    needed = [Path("/root/.pyenv/versions/3.11"), Path("/root/.pyenv/versions/3.11/lib"),
              Path("/root/.local/state/convoy/jobs/j1"), Path("/opt/venv"), Path("/srv/lab/private/x/y"),
              Path("/tmp/pytest/jobs/j2")]
    assert hidden_dirs(needed, mode=mode) == (
        ("/root", (".pyenv/versions/3.11", ".local/state/convoy/jobs/j1")),
        ("/srv/lab/private", ("x/y",)))
    assert hidden_dirs([Path("/opt/venv")], mode=mode) == ()
    # under /tmp, the job's own /tmp shows what it needs itself
    assert hidden_dirs([Path("/tmp/x/y")], mode=lambda p: 0o40700) == ()


def test_the_command_makes_the_mounts_as_root_then_becomes_the_job_user(tmp_path: Path) -> None:
    user = JobUser(uid=0x60000005, slot=5, hidden=(("/root", (".pyenv/versions/3.11",)),))
    command = script_command(tmp_path / ".test_cmds.sh", {"/tmp/cache.txt": tmp_path / "mn" / "cache.txt"}, user,
                             private_tmp=tmp_path / "tmp", keep_in_tmp=(tmp_path,))
    assert command[:5] == ["unshare", "--mount", "--propagation", "private", "sh"]
    assert command[-11:] == ["setpriv", "--reuid=1610612741", "--regid=1610612741", "--clear-groups",
                             "--no-new-privs", "unshare", "--user", "--map-root-user", "bash", "-e",
                             str(tmp_path / ".test_cmds.sh")]
    steps = command[6]
    order = [steps.index(s) for s in (f"mount --rbind {tmp_path / 'tmp'} /tmp", "mount --move /tmp/.convoy-stage /root",
                                      "mount --bind " + str(tmp_path / "mn" / "cache.txt") + " /tmp/cache.txt")]
    assert order == sorted(order), steps  # /tmp first (the stage lives there), the cache file in the job's /tmp
    assert script_command(tmp_path / "s.sh") == ["bash", "-e", str(tmp_path / "s.sh")]


@pytest.fixture
def isolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    reason = jobuser.unavailable()
    if reason is not None:
        pytest.skip(f"job isolation is not available here: {reason}")
    monkeypatch.setenv("CONVOY_STATE_DIR", str(tmp_path / "state"))
    job_dir = tmp_path / "state" / "jobs" / "j1"
    job_dir.mkdir(parents=True)
    return job_dir


def test_a_job_runs_as_its_own_uid_and_its_directory_goes_back_to_root(isolation: Path) -> None:
    job_dir = isolation
    out: list[str] = []
    script = ("id -u; stat -c %u .; echo mine > own.txt; ln -s /etc artifacts; "
              "cat /proc/1/environ >/dev/null 2>&1 || echo environ-denied; "
              "sleep 300 >/dev/null 2>&1 & echo $! > bg.pid")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(job_dir), "TMPDIR": str(job_dir / "tmp")}
    code = run_script(script, cwd=job_dir, env=env, on_output=out.append, cancel=threading.Event(), job="j1")
    assert (code, "".join(out)) == (0, "0\n0\nenviron-denied\n")
    assert (job_dir / "own.txt").read_text() == "mine\n"
    assert {p.lstat().st_uid for p in [job_dir, *job_dir.rglob("*")]} == {0}  # root's again
    assert not (job_dir / "artifacts").is_symlink()  # root reads artifacts/: no link of the job's leads it away
    pid = int((job_dir / "bg.pid").read_text())
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "State:\tZ" in status.read_text(), "the job's background process survived"


def test_a_guest_shares_its_parent_uid_while_both_run(isolation: Path) -> None:
    job_dir = isolation
    (job_dir.parent / "other").mkdir()
    with jobuser.job_user("p1", job_dir) as first, jobuser.job_user("p1", job_dir) as second:
        assert first is not None and first == second
        assert job_dir.stat().st_uid == first.uid and job_dir.stat().st_mode & 0o777 == 0o700
        with jobuser.job_user("other", job_dir.parent / "other") as other:
            assert other is not None and other.uid != first.uid
    assert job_dir.stat().st_uid == 0 and os.path.isdir(job_dir)


def test_a_slot_left_by_a_dead_worker_gives_its_job_directory_back_to_root(isolation: Path) -> None:
    import zlib

    slot = zlib.crc32(b"j2") % jobuser.SLOTS
    uid = jobuser.uid_base() + slot
    dead = isolation.parent / "dead"
    dead.mkdir()
    (dead / "left.txt").write_text("x")
    for path in (dead, dead / "left.txt"):
        os.chown(path, uid, uid)
    uids = isolation.parent.parent / "uids"
    uids.mkdir(exist_ok=True)
    (uids / f"{slot}.lock").write_text(f"j0 1\n{dead}\n")  # the lock a worker that died held
    with jobuser.job_user("j2", isolation) as user:
        assert user is not None and user.uid == uid
        assert {p.stat().st_uid for p in (dead, dead / "left.txt")} == {0}
        assert (uids / f"{slot}.lock").read_text() == f"j2 {os.getpid()}\n{isolation}\n"
