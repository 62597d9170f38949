"""A multi job's outcome: pure logic over its parent's phases and its children's ends.

A multi job passes only if every phase of the parent and every child passed.
A child always ends ``cancelled`` — that is how Testflinger releases a
device — so its state says nothing about how it went; its phases' exit codes
and the outcome, message and cancel reason its worker (or a recovery after
its worker died) recorded tell a child released normally from one that
failed, was cancelled or died.  Plain data in, plain data out: the parent's
cleanup stores the result and ``convoy results`` shows the same reasons.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from convoy.config.lifecycle import FINAL_STATES, PHASES as PHASE_ORDER, JobState, Outcome

#: exit code of a phase stopped by a cancel or a timeout (``tasks.runner.STOPPED_EXIT_CODE``)
STOPPED = 143


@dataclass(frozen=True)
class ChildEnd:
    """What a child's record says about how it ended."""

    job_id: str
    #: its role, else its queue: how users tell the children apart
    label: str
    state: str
    #: what its worker or a recovery recorded: pass, fail, cancelled ("" when nothing was)
    outcome: str = ""
    message: str = ""
    #: why it was cancelled, when someone cancelled it (a user, an aborted allocation)
    cancel_reason: str = ""
    #: phase -> {"status": exit code, ...}
    phases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildFailure:
    job_id: str
    label: str
    reason: str

    def describe(self) -> str:
        return f"child {self.job_id} ({self.label}): {self.reason}"


@dataclass(frozen=True)
class Verdict:
    """pass / fail / cancelled, and why it is not pass."""

    outcome: Outcome
    #: the parent's failed phases, then each failed child (``child <id> (<label>): <why>``)
    reasons: tuple[str, ...] = ()
    failed_children: tuple[ChildFailure, ...] = ()


def _ordered(phases: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted(phases, key=lambda p: (PHASE_ORDER.index(p) if p in PHASE_ORDER else len(PHASE_ORDER), p))


def failed_phases(phases: Mapping[str, Mapping[str, Any]], *, stopped: bool = True) -> list[str]:
    """``test failed (exit 2)`` for each phase that ended non-zero, in run order.

    ``stopped=False`` leaves out phases stopped by a cancel (exit 143).
    """
    out = []
    for name in _ordered(phases):
        status = phases[name].get("status", 0)
        if status in (0, None, ""):
            continue
        if int(status) == STOPPED:
            if stopped:
                out.append(f"{name} stopped (exit {status})")
        else:
            out.append(f"{name} failed (exit {status})")
    return out


def child_failure(child: ChildEnd) -> str | None:
    """Why this child did not pass, or None when it passed and was released normally.

    The most telling reason wins: a death or forced release its record
    names, then a phase that failed on its own, then a cancel (which also
    stops the phase it was in), then a stopped phase.
    """
    if child.state not in FINAL_STATES:
        return f"did not end (still {child.state})"
    if child.outcome == Outcome.FAIL and child.message:  # "device worker for X died during allocated", ...
        return child.message
    failed = failed_phases(child.phases, stopped=False)
    if failed:
        return "; ".join(failed)
    if child.outcome == Outcome.CANCELLED or child.cancel_reason:
        detail = child.message or child.cancel_reason or "no reason recorded"
        return detail if detail.startswith("cancelled") else f"cancelled: {detail}"
    stopped = failed_phases(child.phases)
    if stopped:
        return "; ".join(stopped)
    if child.outcome == Outcome.FAIL:
        return "failed"
    return None


def multi_job_outcome(parent_phases: Mapping[str, Mapping[str, Any]], children: Sequence[ChildEnd], *,
                      cancelled: bool = False, message: str = "") -> Verdict:
    """The outcome of a multi job whose parent has these phases and these children.

    ``cancelled``: a user cancelled the parent (the outcome is ``cancelled``
    whatever else happened; the reasons still say what failed).
    ``message``: what the parent's own record says went wrong (an aborted
    allocation); it fails the job but is not repeated among the reasons.
    """
    failures = tuple(ChildFailure(c.job_id, c.label, reason) for c in children
                     if (reason := child_failure(c)) is not None)
    reasons = tuple(_parent_reason(p) for p in failed_phases(parent_phases)) + tuple(f.describe() for f in failures)
    if cancelled:
        outcome = Outcome.CANCELLED
    elif reasons or message:
        outcome = Outcome.FAIL
    else:
        outcome = Outcome.PASS
    return Verdict(outcome=outcome, reasons=reasons, failed_children=failures)


def _parent_reason(failed: str) -> str:
    """``test failed (exit 1)`` -> ``test phase failed (exit 1)``: the parent's own phase."""
    name, rest = failed.split(" ", 1)
    return f"{name} phase {rest}"


# --- device jobs and guests: one job's own end ---------------------------------------

def phase_outcome(status: int) -> Outcome:
    """A job whose only verdict is one phase's exit code (a guest's test) passes on 0."""
    return Outcome.PASS if status == 0 else Outcome.FAIL


def device_job_outcome(*, failed: bool, cancel_requested: bool, child: bool) -> Outcome:
    """How a device job ended, from whether a phase failed and whether someone cancelled it.

    A cancelled single job is ``cancelled`` whatever its phases did; a child
    (always ended ``cancelled``, the way Testflinger releases a device) that
    failed a phase is ``fail``, one cancelled while it held its device (by a
    user, an aborted allocation) is ``cancelled``, else ``pass``.
    """
    if cancel_requested and not child:
        return Outcome.CANCELLED
    if failed:
        return Outcome.FAIL
    return Outcome.CANCELLED if cancel_requested else Outcome.PASS


def final_state(cancelled: bool) -> JobState:
    """A job that was cancelled ends ``cancelled``; any other ends ``complete``."""
    return JobState.CANCELLED if cancelled else JobState.COMPLETE
