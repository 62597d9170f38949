"""One phase of one job: the pure decisions, then PhaseRun's bookkeeping against an in-memory store.

PhaseRun only records (transition, start, output, end, announce, conclude);
the fake below keeps what a JobStore would, in plain lists, so each case is
plain data in, plain data out.
"""
from __future__ import annotations

from typing import Any

import pytest

from convoy.config.lifecycle import JobState, Outcome, Phase
from convoy.config.outcome import device_job_outcome, final_state, phase_outcome
from convoy.errors import ConvoyError
from convoy.tasks.run.phase import PhaseRun, error_report, failed, interrupted_phase

# --- pure decisions --------------------------------------------------------------------

@pytest.mark.parametrize("status, expected", [(None, False), (0, False), (1, True), (143, True)])
def test_failed(status: int | None, expected: bool) -> None:
    assert failed(status) is expected


@pytest.mark.parametrize("exc, report", [
    (ConvoyError("device unreachable"), (1, "device unreachable")),
    (RuntimeError("boom"), (1, "internal error in provision: RuntimeError('boom')")),
])
def test_error_report(exc: BaseException, report: tuple[int, str]) -> None:
    assert error_report(Phase.PROVISION, exc) == report


@pytest.mark.parametrize("state, phase", [
    ("provision", Phase.PROVISION),
    ("test", Phase.TEST),
    ("allocated", Phase.CLEANUP),   # holding its device: failed in cleanup
    ("reserve", Phase.CLEANUP),
    ("cleanup", Phase.CLEANUP),
])
def test_interrupted_phase(state: str, phase: Phase) -> None:
    assert interrupted_phase(state) is phase


@pytest.mark.parametrize("failed_, cancel_requested, child, outcome", [
    (False, False, False, Outcome.PASS),
    (True, False, False, Outcome.FAIL),
    (False, True, False, Outcome.CANCELLED),
    (True, True, False, Outcome.CANCELLED),   # a cancelled single job is cancelled, whatever its phases did
    (False, False, True, Outcome.PASS),
    (True, False, True, Outcome.FAIL),
    (False, True, True, Outcome.CANCELLED),   # a child cancelled while it held its device did not pass
    (True, True, True, Outcome.FAIL),         # a child that failed a phase failed, cancelled or not
])
def test_device_job_outcome(failed_: bool, cancel_requested: bool, child: bool, outcome: Outcome) -> None:
    assert device_job_outcome(failed=failed_, cancel_requested=cancel_requested, child=child) is outcome


@pytest.mark.parametrize("cancelled, state", [(True, JobState.CANCELLED), (False, JobState.COMPLETE)])
def test_final_state(cancelled: bool, state: JobState) -> None:
    assert final_state(cancelled) is state


@pytest.mark.parametrize("status, outcome", [(0, Outcome.PASS), (1, Outcome.FAIL), (143, Outcome.FAIL)])
def test_phase_outcome(status: int, outcome: Outcome) -> None:
    assert phase_outcome(status) is outcome


# --- the bookkeeping ---------------------------------------------------------------------

class FakeStore:
    """The JobStore calls PhaseRun makes, recorded in order as plain tuples."""

    def __init__(self, state: str = "waiting", refuse: bool = False) -> None:
        self.state = state
        self.refuse = refuse
        self.calls: list[tuple[Any, ...]] = []

    def transition(self, job_id: str, to: str, *, allowed_from=(), **fields: Any) -> tuple[bool, str]:
        previous = self.state
        if self.refuse or (allowed_from and previous not in allowed_from):
            return False, previous
        self.state = to
        self.calls.append(("transition", str(to), {k: str(v) for k, v in fields.items()}))
        return True, previous

    def start_phase(self, job_id: str, phase: str) -> None:
        self.calls.append(("start", str(phase)))

    def end_phase(self, job_id: str, phase: str, status: int) -> None:
        self.calls.append(("end", str(phase), status))

    def append_output(self, job_id: str, phase: str, text: str) -> None:
        self.calls.append(("output", str(phase), text))


def phase_run(store: FakeStore, phase: Phase) -> tuple[PhaseRun, list[tuple[Any, ...]]]:
    announced: list[tuple[Any, ...]] = []
    run = PhaseRun(store, "j1", phase, announce=lambda state, **fields: announced.append((str(state), fields)))
    return run, announced


def test_a_phase_that_passes() -> None:
    store = FakeStore(state="provision")
    run, announced = phase_run(store, Phase.TEST)
    assert run.transition(JobState.TEST)

    def body() -> int:
        run.out("hello")
        return 0

    assert run.run(body) == 0
    assert store.calls == [("transition", "test", {}), ("start", "test"), ("output", "test", "hello\n"),
                           ("end", "test", 0)]
    assert announced == [("test", {})]
    assert run.status == 0 and not run.failed


def test_a_script_s_output_is_kept_exactly_as_printed(tmp_path) -> None:
    """Lines written by a task end with a newline; a script's text that ends mid-line gets none added."""
    import threading

    from convoy.tasks.run.script import run_script

    store = FakeStore(state="test")
    run, _ = phase_run(store, Phase.TEST)
    code = run_script("printf 'abc'; sleep 0.3; printf 'def\\n'; printf 'no newline'", cwd=tmp_path,
                      env={"PATH": "/usr/bin:/bin"}, on_output=run.write, cancel=threading.Event())
    assert code == 0
    assert "".join(c[2] for c in store.calls if c[0] == "output") == "abcdef\nno newline"


@pytest.mark.parametrize("exc, line", [
    (ConvoyError("no image"), "no image\n"),
    (ValueError("bug"), "internal error in provision: ValueError('bug')\n"),
])
def test_a_raising_body_fails_the_phase_and_says_why(exc: Exception, line: str) -> None:
    store = FakeStore()
    run, _ = phase_run(store, Phase.PROVISION)

    def body() -> int:
        raise exc

    assert run.run(body) == 1
    assert store.calls == [("start", "provision"), ("output", "provision", line), ("end", "provision", 1)]
    assert run.failed


def test_a_refused_transition_records_nothing() -> None:
    store = FakeStore(state="cancelled", refuse=True)
    run, announced = phase_run(store, Phase.TEST)
    assert not run.transition(JobState.TEST, allowed_from=[JobState.WAITING])
    assert store.calls == [] and announced == [] and run.status is None and not run.failed


def test_a_quiet_start_is_not_announced() -> None:
    store = FakeStore()
    run, announced = phase_run(store, Phase.ALLOCATE)
    run.start(announce=False)
    run.end(0)
    assert store.calls == [("start", "allocate"), ("end", "allocate", 0)]
    assert announced == []


def test_conclude_ends_the_job_with_its_outcome_and_announces_it() -> None:
    store = FakeStore(state="cleanup")
    run, announced = phase_run(store, Phase.CLEANUP)
    run.announce("reserved", devices=["a"])
    assert run.conclude(JobState.CANCELLED, outcome=Outcome.FAIL, message="worker died")
    assert store.calls == [("transition", "cancelled", {"outcome": "fail", "message": "worker died"})]
    assert announced == [("reserved", {"devices": ["a"]}), ("cancelled", {})]


def test_a_run_without_announcer_is_silent() -> None:
    store = FakeStore(state="test")
    run = PhaseRun(store, "j1", "cleanup")  # a recovery: no Celery task to announce through
    assert run.phase is Phase.CLEANUP
    run.start()
    run.end(0)
    assert run.conclude(JobState.COMPLETE, outcome=Outcome.PASS)
    assert store.calls[-1] == ("transition", "complete", {"outcome": "pass"})
