"""A parent's steps: each runs under a lease, sends the step owed next, and is repaired after a crash.

Which step a parent owes is a pure decision on what the store recorded
(:func:`convoy.config.steps.owed_step`).  A step task takes the parent's
step lease (one coordinator at a time runs a step of a job), checks the step
is still owed, runs it, records it done, and sends whatever is owed next
(:func:`advance`).  A cancel, a reservation's end and an aborted allocation
call :func:`advance` too.  Each scheduler pass calls :func:`repair`: a step
owed while no live coordinator holds the lease — its coordinator died, or
its message was lost with one — is sent again, so no job waits on a dead
process and nothing depends on the broker's visibility timeout.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from convoy.config.lifecycle import FINAL_STATES, JobState
from convoy.config.settings import Settings, load_settings
from convoy.config.steps import STEPS, ParentFacts, ParentStep, owed_step
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.leases import StepLease, lapsed_leases
from convoy.errors import JobNotFound
from convoy.tasks import canvas
from convoy.tasks.celery import app

log = logging.getLogger(__name__)

#: a step sent this long ago that no coordinator runs is sent again: its message died with a coordinator
#: (also one sent just after a coordinator was killed: Redis may hand it to the dead one's blocked read).
#: A step waiting for a free coordinator thread is sent again too, harmlessly: the copy finds it done.
GRACE_SECONDS = 5.0

_FIELDS = ("state", "cancel_requested", "device_children", "has_reserve", "reserve_until", "step_sent",
           *(f"step_{s}" for s in STEPS))


def read_facts(store: JobStore, parent_ids: list[str]) -> dict[str, tuple[ParentFacts, dict[str, Any]]]:
    """Each parent's facts for :func:`owed_step`, and the record fields they came from (three round
    trips for any number of parents: the scheduler reads every moving parent each pass)."""
    rows = dict(zip(parent_ids, store.fields(parent_ids, *_FIELDS), strict=True))
    aborted = store.happened_to(parent_ids, "abort")
    states = store.states(c for row in rows.values() for c in row["device_children"] or [])
    out = {}
    for parent_id, row in rows.items():
        children = row["device_children"] or []
        out[parent_id] = (ParentFacts(
            state=row["state"] or "",
            done=frozenset(s for s in STEPS if row[f"step_{s}"]),
            stopping=bool(row["cancel_requested"]) or aborted[parent_id],
            children_allocated=all(states.get(c) == JobState.ALLOCATED for c in children),
            reserve=bool(row["has_reserve"]),
            holding=bool(row["reserve_until"]),
        ), row)
    return out


def _owed(store: JobStore, parent_id: str) -> ParentStep | None:
    facts, _ = read_facts(store, [parent_id])[parent_id]
    return owed_step(facts) if facts.state else None


def note_sent(store: JobStore, parent_id: str, step: ParentStep) -> None:
    """Note that ``step`` is being sent now: :func:`repair` leaves it alone for :data:`GRACE_SECONDS`."""
    store.set_fields(parent_id, step_sent=f"{step} {time.time():.3f}")


def send(store: JobStore, parent_id: str, step: ParentStep, settings: Settings | None = None) -> None:
    """Queue ``step`` of the parent on the coordinator queue, noted first (for :func:`repair`)."""
    note_sent(store, parent_id, step)
    canvas.parent_step(app, parent_id, step, settings or load_settings()).apply_async()


def advance(store: JobStore, parent_id: str, settings: Settings | None = None) -> ParentStep | None:
    """Send the step the parent owes now, if any (a step already running finds it so and returns)."""
    step = _owed(store, parent_id)
    if step is not None:
        send(store, parent_id, step, settings)
    return step


def run_step(parent_id: str, step: ParentStep, body: Callable[[JobStore], bool]) -> None:
    """Run ``body`` as the parent's ``step`` if it is owed and no other coordinator runs a step of it.

    ``body`` returns whether the step finished (a reservation returns False: it holds until its
    deadline).  Whatever happens, the step owed next is sent.
    """
    store = get_store()
    lease = StepLease(store.client, parent_id)
    if lease.try_acquire() is not None:
        return  # another coordinator runs a step of this job; it sends what is owed when it ends
    try:
        with lease:
            owed = _owed(store, parent_id)
            if owed != step:
                log.info("parent %s: %s is not owed now (%s is)", parent_id, step, owed or "nothing")
            elif body(store):
                store.mark_done(parent_id, step)
            following = _owed(store, parent_id)
            if following is not None:  # noted while the lease still holds, so no repair sends it meanwhile
                note_sent(store, parent_id, following)
    except JobNotFound as exc:
        if store.exists(parent_id):
            raise
        report_lost(parent_id, step, exc)
        return
    advance(store, parent_id)


def report_lost(parent_id: str, step: ParentStep, exc: JobNotFound) -> None:
    """Redis forgot the job while its step ran: say so where it is still known (this log, its directory)."""
    from convoy.tasks.run.env import parent_dir

    report = (f"multi job {parent_id} was lost during its {step} step: Redis no longer knows it "
              f"(restarted without its data, or replaced; {exc})")
    log.error(report)
    (parent_dir(parent_id) / "LOST").write_text(report + "\n")


def repair(store: JobStore, now: float | None = None) -> list[str]:
    """Send again every step owed that no live coordinator runs; forget parents that ended.

    A lease held by a process gone from this host is broken at once; another host's dead
    coordinator is noticed when its lease runs out.  Returns the parents repaired.
    """
    now = time.time() if now is None else now
    owed: dict[str, tuple[ParentStep, dict[str, Any]]] = {}
    for parent_id, (facts, row) in read_facts(store, store.active_parents()).items():
        if not facts.state or facts.state in FINAL_STATES:
            store.parent_ended(parent_id)
        elif (step := owed_step(facts)) is not None:
            owed[parent_id] = (step, row)
    repaired = []
    for parent_id, holder in zip(owed, lapsed_leases(store.client, "step", list(owed)), strict=True):
        if holder is None:
            continue  # a live coordinator runs a step of it
        step, row = owed[parent_id]
        sent, _, sent_at = (row["step_sent"] or "").partition(" ")
        if not holder.pid and sent == step and now - float(sent_at or 0) < GRACE_SECONDS:
            continue  # sent a moment ago: on its way to a coordinator
        if holder.pid:
            store.set_fields(parent_id, step_died=holder.describe())
            log.warning("parent %s: the coordinator running its steps (%s) died; %s runs again",
                        parent_id, holder.describe(), step)
        else:
            log.warning("parent %s: %s was owed and not running; sent it again", parent_id, step)
        send(store, parent_id, step)
        repaired.append(parent_id)
    return repaired
