"""The test shell without a device: the overlay, the helpers and the session driver, over a stand-in ``ssh``.

The stand-in ``ssh`` runs the command with ``sh`` in a temporary "home" on
this machine, so the real helpers, runner and driver talk exactly as they do
over SSH (output lines up, replies down the session's input); a relay
stand-in answers MultiNode calls.  The same paths over real SSH to emulated
devices are in tests/integration/test_test_shell.py.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from convoy.errors import ConvoyError
from convoy.tasks.run.testshell.overlay import build_overlay, definition_script
from convoy.tasks.run.testshell.runner import device_environment, run_lava_tests
from convoy.tasks.run.testshell.session import LOST_EXIT_CODE, STOPPED_EXIT_CODE, TIMED_OUT_EXIT_CODE
from convoy.workers.embedded.lab import wait_until


@dataclass
class Reply:
    code: int
    stdout: str = ""
    stderr: str = ""
    cache: list[str] | None = None
    network_cache: list[str] | None = None


class Relay:
    """Answers like the group would: lava-wait gives a cache, lava-self an id, 'lava-wait slow' blocks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], str | None]] = []

    def call(self, prog, argv, *, device_ip=None, stop=None):
        self.calls.append((prog, argv, device_ip))
        if prog == "lava-self":
            return Reply(0, stdout="job-1\n")
        if prog == "lava-wait" and argv == ["slow"]:
            while stop is None or stop() is None:
                time.sleep(0.05)
            return Reply(1, stderr="lava-wait: stopped\n")
        if prog == "lava-wait":
            return Reply(0, cache=["ip=10.0.0.9", "note=a b=c"])
        if prog == "lava-wait-all":
            return Reply(1, stderr="lava-wait-all: member job-2 failed\n")
        return Reply(0)


@pytest.fixture
def shell(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    ssh = tmp_path / "ssh"
    ssh.write_text(f'#!/bin/sh\nshift 2\ncd "{home}" && HOME="{home}" exec sh -c "$1"\n')
    ssh.chmod(0o755)
    cache = tmp_path / "cache.txt"

    def run(*steps: str, relay=None, timeout: float | None = None, cancel: threading.Event | None = None,
            more: list[dict] | None = None, environment: dict[str, str] | None = None,
            output_timeout: float | None = None):
        out: list[str] = []
        cases: list[dict] = []
        tests = [{"definitions": [{"name": "t", "from": "inline", "repository": {"run": {"steps": list(steps)}}},
                                  *(more or [])], **({"timeout": timeout} if timeout else {})}]
        status = run_lava_tests(tests, job_id="j1", work_dir=tmp_path / "work", ssh=ssh, host="device",
                                environment=environment if environment is not None else
                                {"LAVA_MULTI_NODE_CACHE": str(cache)}, out=out.append,
                                record=cases.append, relay=relay, cancel=cancel or threading.Event(), deadline=None,
                                output_timeout=output_timeout)
        return status, "".join(out), cases

    run.home = home
    run.cache = cache
    return run


def test_steps_run_in_the_definitions_directory_and_do_not_read_the_sessions_input(shell):
    status, out, cases = shell("pwd", "cat", "echo after-cat",
                               "lava-test-case c --result pass --measurement 2 --units s")
    assert status == 0, out
    assert f"{shell.home}/lava-j1/0/tests/0_t\nafter-cat\n" in out
    assert {"suite": "0_t", "case": "c", "result": "pass", "measurement": "2", "units": "s",
            "definition": "0_t"} in cases
    assert {"suite": "lava", "case": "0_t", "result": "pass", "definition": "0_t"} in cases


def test_multinode_calls_are_relayed_and_their_replies_read_back(shell):
    relay = Relay()
    status, out, _ = shell("echo me=$(lava-self)", "lava-wait ready", "cat $LAVA_MULTI_NODE_CACHE",
                           "lava-send done 'msg=a b' x=1", relay=relay)
    assert status == 0, out
    assert "me=job-1\nip=10.0.0.9\nnote=a b=c\n" in out
    assert ("lava-send", ["done", "msg=a b", "x=1"], None) in relay.calls


def test_a_failed_multinode_wait_fails_the_action_and_a_raise_stops_the_rest(shell):
    status, out, _ = shell("lava-wait-all done", "echo not-reached", relay=Relay())
    assert status == 1 and "member job-2 failed" in out and "not-reached" not in out
    after = {"name": "next", "from": "inline", "repository": {"run": {"steps": ["echo no2"]}}}
    status, out, cases = shell("lava-test-raise broken disk", "echo no", more=[after])
    assert status == 1 and "lava-test-raise: broken disk" in out and "no\n" not in out and "no2" not in out
    assert {"suite": "lava", "case": "0_t", "result": "fail", "definition": "0_t"} in cases


def test_a_failed_case_does_not_fail_the_action_a_failing_step_does(shell):
    status, out, cases = shell("lava-test-case f --shell false", "lava-test-case s --result skip")
    assert status == 0, out
    assert [c["result"] for c in cases if c["suite"] == "0_t"] == ["fail", "skip"]
    status, out, cases = shell("false", "echo not-reached")
    assert status == 1 and "not-reached" not in out


def test_timeout_cancel_and_a_lost_session(shell, tmp_path):
    status, out, _ = shell("sleep 30 & echo $! > $HOME/sleeper.pid", "wait", timeout=0.5)
    assert status == TIMED_OUT_EXIT_CODE and "timed out after 0.5s" in out
    sleeper = int((shell.home / "sleeper.pid").read_text())
    assert wait_until(lambda: not Path(f"/proc/{sleeper}").exists() or
                      Path(f"/proc/{sleeper}/stat").read_text().split()[2] == "Z", 10), "left running on the device"
    status, out, _ = shell("echo one", "sleep 30", output_timeout=0.5)
    assert status == TIMED_OUT_EXIT_CODE and "no output for 0.5s (output_timeout)" in out
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    status, out, _ = shell("lava-wait slow", relay=Relay(), cancel=cancel)
    assert status == STOPPED_EXIT_CODE and "cancelled" in out
    status, out, _ = shell("kill -9 $(cat ../../runner.pid)")
    assert status == LOST_EXIT_CODE and "device was lost" in out


def test_background_processes_are_stopped_by_name_or_at_the_end_of_the_action(shell):
    status, out, cases = shell('lava-background-process-start ticker --cmd "while :; do sleep 0.1; done"',
                               "lava-background-process-stop ticker",
                               'lava-background-process-start forgotten --cmd "sleep 600"', "echo done")
    assert status == 0 and "done\n" in out, out  # the forgotten one does not hold the session open
    assert {"suite": "0_t", "case": "ticker", "result": "pass", "definition": "0_t"} in cases


def test_a_flood_of_call_markers_gets_a_bounded_number_of_threads(shell):
    relay = Relay()
    flood = ('for i in $(seq 150); do echo "<LAVA_MULTI_NODE> <LAVA_WAIT slow> '
             '<CONVOY_CALL f$i lava-wait x736c6f77 ->"; done')
    status, out, _ = shell(flood, "echo after-the-flood", relay=relay)
    assert "after-the-flood\n" in out
    assert len(relay.calls) == 64  # MAX_CALLS_IN_FLIGHT; the rest were refused at once
    assert status == 1  # the relayed waits were ended by the session's end: failed MultiNode calls


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="private mounts need root")
def test_a_device_that_is_no_sandbox_gets_its_own_cache_file_at_lavas_path(shell):
    shared = Path("/tmp/lava_multi_node_cache.txt")
    before = shared.read_bytes() if shared.exists() else None
    status, out, _ = shell("lava-wait ready", "echo cache: $(cat /tmp/lava_multi_node_cache.txt)", relay=Relay(),
                           environment=device_environment({}, sandboxed=False, device_ip="127.9.9.9"))
    assert status == 0 and "cache: ip=10.0.0.9 note=a b=c\n" in out, out
    assert (shared.read_bytes() if shared.exists() else None) == before  # the host's file is untouched


def test_a_helper_outside_the_session_says_so(shell):
    _, out, _ = shell("lava-send x </dev/null 9<&- 2>&1 || echo exit-$?")
    assert "not connected to the test shell" in out and "exit-1" in out


def test_run_sh_exports_parameters_the_job_overrides_and_installs_deps():
    script = definition_script("3_smoke", {"repository": {"params": {"A": 1, "B": "x"},
                                                          "install": {"deps": ["curl", "iperf3"]},
                                                          "run": {"steps": ["echo $A $B"]}},
                                           "parameters": {"B": "it's"}})
    lines = script.splitlines()
    assert lines.index("export A=1") < lines.index("export B='it'\"'\"'s'") < lines.index("set -e")
    assert "export TESTRUN_ID=3_smoke" in lines
    assert lines[-3:] == ["lava-install-packages curl iperf3", "echo $A $B",
                          'echo "<LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>"']


def test_an_overlay_refuses_what_would_escape_its_directory_or_its_shell(tmp_path):
    with pytest.raises(ConvoyError, match="name"):
        build_overlay(tmp_path / "o", "j", [{"definitions": [{"name": "../x", "repository": {}}]}], {})
    with pytest.raises(ConvoyError, match="variable name"):
        build_overlay(tmp_path / "o", "j", [], {"A;rm -rf /": "x"})


def test_the_device_environment_holds_no_secret_and_says_when_the_device_is_no_sandbox():
    job = {"test_data": {"env": {"MODE": "fast"}}, "multinode": {}}
    assert device_environment(job, sandboxed=True, device_ip="10.0.0.2") == {"MODE": "fast"}
    assert device_environment(job, sandboxed=False, device_ip="127.1.2.3") == {
        "MODE": "fast", "CONVOY_SHARED_HOST": "1", "CONVOY_DEVICE_IP": "127.1.2.3", "CONVOY_PRIVATE_CACHE": "1"}
