"""The test shell's sessions: the overlay copied to the device, each test action run there over SSH.

One real OpenSSH session (the job's ``ssh`` wrapper and config from
:mod:`convoy.tasks.run.ssh`) per test action runs ``lava-test-runner`` on the
device.  Its output is read line by line: marker lines
(:mod:`convoy.tasks.run.testshell.markers`) become test cases and MultiNode
calls; everything else is the phase's output.  A MultiNode call runs in a
thread of its own (output keeps flowing while a ``lava-wait`` blocks) and its
reply is written to the session's input, where the helper reads it.

Outcome, by LAVA's rules: a failed test case or a definition stopped by a
failing step does not fail the action; ``lava-test-raise``, a failed
MultiNode wait (timeout, a member failed), the action's or the job's timeout,
a cancel, or a session that ends without ``<LAVA_TEST_RUNNER EXIT>`` (the
device was lost) does.
"""
from __future__ import annotations

import logging
import queue
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from convoy.config.testresults import LAVA_SUITE, test_phase_failure
from convoy.tasks.run.testshell import markers
from convoy.tasks.run.testshell.overlay import Overlay, overlay_tar

log = logging.getLogger(__name__)

__all__ = ["WAIT_PROGRAMS", "ActionResult", "Relay", "TestShell"]

#: a MultiNode call that fails (exit 1) with one of these fails the action: LAVA's protocol error
WAIT_PROGRAMS = frozenset({"lava-send", "lava-wait", "lava-wait-all", "lava-sync"})
#: after ``<LAVA_TEST_RUNNER EXIT>``, how long the session may take to close (a background process
#: still holding its output keeps it open)
EXIT_GRACE_SECONDS = 5.0
COPY_TIMEOUT_SECONDS = 120.0
POLL_SECONDS = 0.2
#: MultiNode calls of one session relayed at once; more (a definition printing call markers in a loop)
#: are answered with an error at once rather than each given a thread
MAX_CALLS_IN_FLIGHT = 64
TIMED_OUT_EXIT_CODE = 124
LOST_EXIT_CODE = 255
STOPPED_EXIT_CODE = 143


class Reply(Protocol):
    code: int
    stdout: str
    stderr: str
    cache: list[str] | None
    network_cache: list[str] | None


class Relay(Protocol):
    """A MultiNode call executed against the group (``convoy.tasks.run.relay.MultiNodeRelay``)."""

    def call(self, prog: str, argv: list[str], *, device_ip: str | None = None,
             stop: Callable[[], str | None] | None = None) -> Reply: ...


@dataclass
class _NoGroup:
    code: int = 1
    stdout: str = ""
    stderr: str = ""
    cache: list[str] | None = None
    network_cache: list[str] | None = None


@dataclass
class ActionResult:
    """How one test action ended: ``status`` 0 unless LAVA's rules fail it (``reason`` says why)."""

    status: int = 0
    reason: str = ""
    exited: bool = False
    raised: str | None = None
    multinode_failed: str | None = None
    cases: int = 0


@dataclass
class _State:
    result: ActionResult = field(default_factory=ActionResult)
    suite: str | None = None          #: the definition running (TESTRUN_ID), between STARTRUN and ENDRUN
    test_set: str | None = None
    ended: threading.Event = field(default_factory=threading.Event)  #: the session is over
    cases: list[dict[str, Any]] = field(default_factory=list)        #: what this action recorded
    calls: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_CALLS_IN_FLIGHT))  #: relayed calls in flight

    def gone(self) -> str | None:
        """Why a MultiNode wait of this session should end now (its session ended), else None."""
        return "the test shell's session ended" if self.ended.is_set() else None


class TestShell:
    """Runs a job's LAVA test actions on one device, over its own SSH sessions."""

    __test__ = False  # not a pytest class

    def __init__(self, *, ssh: Path, host: str, overlay: Overlay, out: Callable[[str], None],
                 record: Callable[[dict[str, Any]], None], relay: Relay | None, cancel: threading.Event,
                 on_start: Callable[[int], None] | None = None, output_timeout: float | None = None) -> None:
        self.ssh, self.host, self.overlay = ssh, host, overlay
        self.out, self.record, self.relay, self.cancel = out, record, relay, cancel
        #: learns each session's process group (its ``ssh``), so a recovery after a crash can end it
        self.on_start = on_start
        #: the job's ``output_timeout``: a session that prints nothing that long is stopped (a timeout)
        self.output_timeout = output_timeout

    # --- copying ------------------------------------------------------------------------------
    def install(self) -> None:
        """Copy the overlay to the device (replacing an older copy); ConvoyError naming ssh's complaint."""
        from convoy.errors import ConvoyError

        name = shlex.quote(self.overlay.name)
        done = subprocess.run([str(self.ssh), "-T", self.host, f"rm -rf {name} && tar -xf -"],
                              input=overlay_tar(self.overlay), capture_output=True, timeout=COPY_TIMEOUT_SECONDS,
                              check=False)
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise ConvoyError(f"cannot copy the test overlay to {self.host} (ssh exited {done.returncode}): "
                              + " / ".join(said))

    # --- one action ---------------------------------------------------------------------------
    def run_action(self, index: int, deadline: float | None, limit: float | None = None) -> ActionResult:
        """Run test action ``index`` until its end, ``deadline`` (epoch seconds) or a cancel."""
        name = shlex.quote(self.overlay.name)
        command = f"sh {name}/bin/lava-test-runner {name}/{index}"
        proc = subprocess.Popen([str(self.ssh), "-T", self.host, command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None
        if self.on_start is not None:
            self.on_start(proc.pid)
        lines: queue.Queue[bytes | None] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True,
                                  name=f"testshell-{index}")
        reader.start()
        state = _State()
        writer = _Writer(proc.stdin)
        calls: list[threading.Thread] = []
        closing_at: float | None = None
        stop: str | None = None
        last_output = time.monotonic()
        try:
            while True:
                try:
                    raw = lines.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    raw = b""
                if raw is None:
                    break
                if raw:
                    last_output = time.monotonic()
                    calls += self.handle(raw, state, writer)
                if state.result.exited and closing_at is None:
                    writer.close()
                    closing_at = time.monotonic() + EXIT_GRACE_SECONDS
                stop = self.stop_reason(deadline, limit, closing_at, last_output)
                if stop is not None:
                    break
        finally:
            state.ended.set()
            writer.close()
            if stop is not None and stop != "closing":
                self.stop_remote(index)
            if stop is None:  # the session's output ended: ssh exits by itself in a moment
                try:
                    proc.wait(timeout=EXIT_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
            _end(proc)
            reader.join(timeout=5)
        until = time.monotonic() + 2  # the calls' waits end with the session (state.gone)
        for thread in calls:
            thread.join(timeout=max(0.0, until - time.monotonic()))
        return self.conclude(state, proc.wait(), stop)

    def stop_remote(self, index: int) -> None:
        """End the action's processes on the device (its runner's process group), over a second session.

        A device's SSH server without a terminal does not hang up a session's processes when the client goes;
        best effort: the device may be gone too.
        """
        pidfile = shlex.quote(f"{self.overlay.name}/{index}/runner.pid")
        command = (f"p=$(cat {pidfile} 2>/dev/null) && g=$(ps -o pgid= -p \"$p\" | tr -d ' ') "
                   "&& [ -n \"$g\" ] && kill -TERM -\"$g\"; true")
        try:
            subprocess.run([str(self.ssh), "-T", self.host, command], capture_output=True, timeout=15, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not stop test action %d on %s: %s", index, self.host, exc)

    def stop_reason(self, deadline: float | None, limit: float | None, closing_at: float | None,
                    last_output: float) -> str | None:
        if self.cancel.is_set():
            return "cancelled"
        if deadline is not None and time.time() >= deadline:
            return f"timed out after {limit:g}s" if limit else "timed out"
        if self.output_timeout and closing_at is None and time.monotonic() - last_output >= self.output_timeout:
            return f"timed out: no output for {self.output_timeout:g}s (output_timeout)"
        if closing_at is not None and time.monotonic() >= closing_at:
            return "closing"
        return None

    def conclude(self, state: _State, code: int, stop: str | None) -> ActionResult:
        result = state.result
        if state.suite is not None:  # the session ended inside a definition
            self.definition_ended(state, "fail")
        timed_out = stop is not None and stop not in ("closing", "cancelled")
        lava_rule = test_phase_failure(state.cases, raised=result.raised is not None, timed_out=timed_out,
                                       shell_status=code if result.exited else None)
        if stop == "cancelled":
            result.status, result.reason = STOPPED_EXIT_CODE, "the test action was cancelled"
        elif timed_out:
            result.status, result.reason = TIMED_OUT_EXIT_CODE, f"the test action {stop}"
        elif not result.exited:
            result.status = LOST_EXIT_CODE
            result.reason = (f"the test shell's session ended without <LAVA_TEST_RUNNER EXIT> (ssh exited {code}): "
                             "the device was lost or its runner killed")
        elif result.raised is not None:
            result.status, result.reason = 1, f"lava-test-raise: {result.raised}"
        elif result.multinode_failed is not None:
            result.status, result.reason = 1, f"a MultiNode call failed: {result.multinode_failed}"
        elif lava_rule:
            result.status, result.reason = 1, lava_rule
        if result.reason:
            self.out(f"*** {result.reason} ***\n")
        return result

    # --- lines --------------------------------------------------------------------------------
    def handle(self, raw: bytes, state: _State, writer: _Writer) -> list[threading.Thread]:
        """One line of the session's output: a marker handled, anything else shown."""
        text = raw.decode("utf-8", "replace")
        event = markers.parse(text) if text.endswith("\n") else None
        if event is None:
            self.out(text)
            parser = self.overlay.parsers.get(state.suite) if state.suite else None
            if parser is not None:  # LAVA's parse: pattern, on the running definition's lines
                found = parser.match(text)
                if isinstance(found, markers.TestCase):
                    self.case(state, found)
                elif found:
                    self.out(f"{found}\n")
            return []
        if isinstance(event, markers.Call):
            if not state.calls.acquire(blocking=False):
                writer.write(markers.reply_lines(event.call_id, 1, stderr=f"{event.prog}: too many MultiNode calls "
                                                 f"at once ({MAX_CALLS_IN_FLIGHT}) in this test shell"))
                return []
            thread = threading.Thread(target=self.call, args=(event, state, writer), daemon=True,
                                      name=f"multinode-{event.prog}")
            thread.start()
            return [thread]
        if isinstance(event, markers.StartRun):
            if state.suite is not None:
                self.definition_ended(state, "fail")
            state.suite, state.test_set = event.testrun, None
        elif isinstance(event, markers.EndRun):
            if state.suite == event.testrun:
                self.definition_ended(state, "pass")
        elif isinstance(event, markers.TestSet):
            state.test_set = event.name
        elif isinstance(event, markers.TestCase):
            self.case(state, event)
        elif isinstance(event, markers.Raise):
            state.result.raised = event.message
            self.out(f"lava-test-raise: {event.message}\n")
            self.save(state, {"suite": LAVA_SUITE, "case": state.suite or "lava-test-raise", "result": "fail",
                              "definition": state.suite})
        elif isinstance(event, markers.RunnerExit):
            state.result.exited = True
        return []

    def case(self, state: _State, event: markers.TestCase) -> None:
        suite = state.suite or "lava-test-shell"
        shown = f"{event.measurement} {event.units or ''}".rstrip() if event.measurement else ""
        self.out(f"test case {suite}/{event.name}: {event.result}{' ' + shown if shown else ''}\n")
        self.save(state, {"suite": suite, "case": event.name, "result": event.result,
                          "measurement": event.measurement, "units": event.units, "set": state.test_set,
                          "reference": event.reference, "definition": state.suite})

    def definition_ended(self, state: _State, result: str) -> None:
        """LAVA's ``lava`` suite has a case per definition: pass when it reached its end, else fail."""
        self.save(state, {"suite": LAVA_SUITE, "case": state.suite, "result": result, "definition": state.suite})
        state.suite, state.test_set = None, None

    def save(self, state: _State, case: dict[str, Any]) -> None:
        try:
            kept = {k: v for k, v in case.items() if v is not None}
            self.record(kept)
            state.cases.append(kept)
            state.result.cases += 1
        except ValueError as exc:  # a case the results store refuses: said, never a crash
            self.out(f"test case not recorded: {exc}\n")
        except Exception as exc:  # noqa: BLE001 - a Redis hiccup must not end the session; said in the output
            log.warning("recording a test case failed: %s", exc)
            self.out(f"test case not recorded: {exc}\n")

    def call(self, event: markers.Call, state: _State, writer: _Writer) -> None:
        """A MultiNode call relayed to the group; its reply written back to the helper."""
        try:
            self.relay_call(event, state, writer)
        finally:
            state.calls.release()

    def relay_call(self, event: markers.Call, state: _State, writer: _Writer) -> None:
        try:
            reply: Reply = (self.relay.call(event.prog, list(event.argv), device_ip=event.ipv4, stop=state.gone)
                            if self.relay is not None else
                            _NoGroup(stderr=f"{event.prog}: this job is not a member of a MultiNode group"))
        except Exception as exc:
            log.exception("MultiNode call %s failed", event.prog)
            reply = _NoGroup(stderr=f"{event.prog}: the worker could not relay the call: {exc}")
        if reply.code == 1 and (event.prog in WAIT_PROGRAMS
                                or (event.prog == "lava-network" and event.argv[:1] in (("broadcast",),
                                                                                        ("collect",)))):
            said = reply.stderr.strip().splitlines()
            state.result.multinode_failed = f"{event.prog} {' '.join(event.argv)}: " + (said[-1] if said else "failed")
        writer.write(markers.reply_lines(event.call_id, reply.code, reply.stdout, reply.stderr, reply.cache,
                                         reply.network_cache))


class _Writer:
    """The session's input: whole replies queued by the call threads, written by a thread of its own.

    Nobody waits for the device to read them (a device that stops reading blocks only this thread).
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.replies: queue.Queue[bytes | None] = queue.Queue()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="testshell-input")
        self.thread.start()

    def write(self, lines: list[str]) -> None:
        if not self.closed:
            self.replies.put("".join(lines).encode("utf-8"))

    def close(self) -> None:
        """No more replies: the session's input ends once those queued are written."""
        if not self.closed:
            self.closed = True
            self.replies.put(None)

    def _run(self) -> None:
        try:
            while (data := self.replies.get()) is not None:
                self.stream.write(data)
                self.stream.flush()
        except (OSError, ValueError):  # the session is gone
            pass
        finally:
            try:
                self.stream.close()
            except OSError:
                pass


def _read_lines(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    try:
        while True:
            raw = stream.readline(markers.MAX_LINE)
            if not raw:
                break
            lines.put(raw)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Stop the local ``ssh`` (the device's SSH server hangs up the session's processes)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
