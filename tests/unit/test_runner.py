"""Running test_cmds: exit codes, streamed output, cancel and timeout stop the whole group."""
from __future__ import annotations

import os
import threading
import time

import psutil
import pytest
import redis

from convoy.tasks.run.script import (
    OUTPUT_LOST_EXIT_CODE,
    STOPPED_EXIT_CODE,
    OutputTimeout,
    Timeout,
    run_script,
)


def run(script, tmp_path, cancel=None, timeout=None, output_timeout=None):
    chunks: list[str] = []
    code = run_script(script, cwd=tmp_path, env=dict(os.environ), on_output=chunks.append,
                      cancel=cancel or threading.Event(), timeout=timeout, output_timeout=output_timeout)
    return code, "".join(chunks)


class Clock:
    """A clock that reads the times it is given: stop conditions on plain data, no waiting."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


SILENT = "\n*** no output for 2 s (output_timeout); stopping ***\n"


@pytest.mark.parametrize("output_at, checked_at, expected", [
    ([], 1.9, None),                # started at 0: silent, but not for long enough
    ([], 2.0, SILENT),              # silent since the start
    ([1.0], 2.5, None),             # output at 1 restarts the count
    ([1.0, 2.9], 4.8, None),
    ([1.0, 2.9], 4.9, SILENT),
    ([0.5, 1.0, 1.5], 10.0, SILENT),
])
def test_output_timeout_stops_after_that_long_without_output(output_at, checked_at, expected):
    clock = Clock(0.0)
    silence = OutputTimeout(2, clock=clock)
    for at in output_at:
        clock.now = at
        silence.saw_output()
    clock.now = checked_at
    assert silence() == expected


@pytest.mark.parametrize("checked_at, expected", [
    (0.0, None), (4.9, None), (5.0, "\n*** test_cmds timed out after 5s; stopping it ***\n"),
])
def test_timeout_stops_at_its_deadline(checked_at, expected):
    clock = Clock(100.0)
    timeout = Timeout(5, clock=clock)
    clock.now = 100.0 + checked_at
    assert timeout() == expected


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
    # the SIGTERM reached it with the script's; its exit may still be under way: wait for it, with a deadline
    assert wait_dead(child, timeout=10), "the script's background child survived the cancel"


def wait_dead(pid: int, timeout: float) -> bool:
    """True once ``pid`` is gone or a zombie (dead, not reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def test_timeout_stops_the_script(tmp_path):
    code, out = run("sleep 300", tmp_path, timeout=0.5)
    assert code == STOPPED_EXIT_CODE
    assert "timed out" in out


def test_output_timeout_stops_a_silent_script_and_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    code, out = run(f"echo once\nsleep 300 &\necho $! > {marker}\nwait", tmp_path, output_timeout=0.5)
    assert code == STOPPED_EXIT_CODE
    assert out == "once\n\n*** no output for 0.5 s (output_timeout); stopping ***\n"
    assert wait_dead(int(marker.read_text()), timeout=10), "the script's background child survived"


def test_a_script_that_keeps_printing_is_not_stopped_by_output_timeout(tmp_path):
    code, out = run("for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done", tmp_path, output_timeout=5)
    assert code == 0 and out.split() == ["1", "2", "3", "4", "5", "6"]


def test_private_files_give_each_script_its_own_cache_file(tmp_path):
    from convoy.tasks.run.script import private_mounts_supported

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


class FlakyStore:
    """Stands for the job store behind ``on_output``: unreachable for its first ``failures`` calls, or always."""

    def __init__(self, failures: int | None) -> None:
        self.failures_left = failures
        self.received: list[str] = []

    def __call__(self, text: str) -> None:
        if self.failures_left is None:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        if self.failures_left > 0:
            self.failures_left -= 1
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.received.append(text)


def test_output_reaches_a_store_that_fails_for_a_while_in_order_and_once(tmp_path):
    store = FlakyStore(failures=3)
    code = run_script("for i in $(seq 1 500); do echo line $i; done", cwd=tmp_path, env=dict(os.environ),
                      on_output=store, cancel=threading.Event())
    assert code == 0
    assert "".join(store.received).splitlines() == [f"line {i}" for i in range(1, 501)]
    assert store.failures_left == 0


def test_a_script_printing_more_than_a_pipe_holds_ends_although_the_store_never_answers(tmp_path):
    store = FlakyStore(failures=None)
    # 2 MB: far beyond a pipe's 64 KiB, so the script only ends if the pipe is read all along
    code = run_script("head -c 2000000 /dev/zero | tr '\\0' x; echo; echo done > finished", cwd=tmp_path,
                      env=dict(os.environ), on_output=store, cancel=threading.Event(), output_grace=0.2)
    assert (tmp_path / "finished").read_text() == "done\n"
    assert code == OUTPUT_LOST_EXIT_CODE != 0, "lost output must not pass"


def test_lost_output_keeps_a_failing_scripts_own_exit_code(tmp_path):
    code = run_script("echo some output\nexit 5", cwd=tmp_path, env=dict(os.environ),
                      on_output=FlakyStore(failures=None), cancel=threading.Event(), output_grace=0.1)
    assert code == 5


def test_a_character_split_between_two_reads_stays_whole():
    from convoy.tasks.run.script import _pump

    read_fd, write_fd = os.pipe()
    got: list[str] = []
    first_read = threading.Event()

    def write(text: str) -> None:
        got.append(text)
        first_read.set()

    with os.fdopen(read_fd, "rb") as stream:
        reader = threading.Thread(target=_pump, args=(stream, write))
        reader.start()
        os.write(write_fd, b"caf\xc3")  # the first byte of "\u00e9" ...
        assert first_read.wait(10)
        os.write(write_fd, b"\xa9\n")  # ... and its second, in a later read
        os.close(write_fd)
        reader.join(10)
    assert "".join(got) == "caf\u00e9\n"


def test_output_of_a_process_left_running_is_said_to_end_with_the_script(tmp_path, monkeypatch):
    import convoy.tasks.run.script as runner

    monkeypatch.setattr(runner, "READER_JOIN_SECONDS", 0.2)
    marker = tmp_path / "leftover.pid"
    code, out = run(f"(sleep 30; echo too late) &\necho $! > {marker}\necho done", tmp_path)
    os.killpg(os.getpgid(int(marker.read_text())), 9)  # the script's group: the subshell and its sleep
    assert code == 0
    assert out.startswith("done\n")
    assert "still holds its output, which is not kept" in out and "too late" not in out
