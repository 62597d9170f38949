"""Running test_cmds: exit codes, streamed output, cancel and timeout stop the whole group."""
from __future__ import annotations

import os
import threading

from convoy.tasks.runner import STOPPED_EXIT_CODE, run_script


def run(script, tmp_path, cancel=None, timeout=None):
    chunks: list[str] = []
    code = run_script(script, cwd=tmp_path, env=dict(os.environ), on_output=chunks.append,
                      cancel=cancel or threading.Event(), timeout=timeout)
    return code, "".join(chunks)


def test_exit_code_and_output(tmp_path):
    code, out = run("echo one\necho two >&2\nexit 4", tmp_path)
    assert code == 4
    assert out.splitlines() == ["one", "two"]


def test_script_stops_at_the_first_failing_command(tmp_path):
    code, out = run("echo before\nfalse\necho after", tmp_path)
    assert code == 1
    assert "after" not in out


def test_runs_in_the_given_directory(tmp_path):
    code, out = run("pwd", tmp_path)
    assert code == 0 and out.strip() == str(tmp_path)


def test_cancel_stops_the_script_and_its_children(tmp_path):
    cancel = threading.Event()
    marker = tmp_path / "child.pid"
    threading.Timer(0.5, cancel.set).start()
    code, _ = run(f"sleep 300 &\necho $! > {marker}\nwait", tmp_path, cancel=cancel)
    assert code == STOPPED_EXIT_CODE
    child = int(marker.read_text())
    try:
        os.kill(child, 0)
        alive = os.path.exists(f"/proc/{child}") and "Z" not in open(f"/proc/{child}/stat").read().split()[2]
    except ProcessLookupError:
        alive = False
    assert not alive, "the script's background child survived the cancel"


def test_timeout_stops_the_script(tmp_path):
    code, out = run("sleep 300", tmp_path, timeout=0.5)
    assert code == STOPPED_EXIT_CODE
    assert "timed out" in out


def test_private_files_give_each_script_its_own_cache_file(tmp_path):
    from convoy.tasks.runner import private_mounts_supported

    if not private_mounts_supported():
        import pytest

        pytest.skip("no mount namespaces here: scripts share the cache file")
    shared = "/tmp/convoy-test-private-cache.txt"
    outputs = []
    for name in ("one", "two"):
        mine = tmp_path / name / "cache.txt"
        code = run_script(f"echo {name} > {shared}\ncat {shared}", cwd=tmp_path, env=dict(os.environ),
                          on_output=outputs.append, cancel=threading.Event(), private_files={shared: mine})
        assert code == 0
        assert mine.read_text() == f"{name}\n"
    assert "".join(outputs) == "one\ntwo\n"
    assert open(shared).read() == "", "the shared path itself must stay untouched"
