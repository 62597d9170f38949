"""The scheduler loop: runs the pure allocator on events, assigns devices, publishes jobs.

One scheduler decides at a time, whichever coordinator holds the scheduler
lease; another takes over within seconds of its death.  It wakes on every
event that may let a job start (a submit, a release, a device registering or
going back online) and at least every :data:`SAFETY_SECONDS` (devices going
offline send no event, allocation deadlines fall due).  A pass:

1. fires due allocation deadlines (``allocation_timeout`` counts from
   submission: a job that waited too long ends with Testflinger's "Timed out
   waiting for devices to allocate", holding nothing while it ran down);
2. reads the waiting jobs and the device registry, and repairs assignments:
   a device that went offline before its job started is replaced by another
   idle one if the lab has it; a device assigned to a job that ended is
   released; a job assigned long ago that its live device never started is
   sent again;
3. asks the allocator which jobs start now and on which devices;
4. for each, assigns all its devices in one atomic Redis step (or none, if
   something changed since the read), then publishes its task or chord with
   each device's task on that device's own queue.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from convoy.config.jobs import is_multi
from convoy.config.lifecycle import FINAL_STATES, JobState, Phase
from convoy.config.settings import Settings, load_settings
from convoy.coordinator.scheduling.allocator import WaitReason, allocate, explain
from convoy.coordinator.scheduling.model import Assignment, Device, Health, WaitingJob
from convoy.coordinator.scheduling.requirements import requirement, requirements, waiting_job
from convoy.coordinator.state import schedule, timers
from convoy.coordinator.state.devices import DeviceSummary, device_summaries, unassign_device
from convoy.coordinator.state.jobs import JobStore, now_iso
from convoy.coordinator.state.leases import SchedulerLease, lapsed_leases
from convoy.errors import JobNotFound
from convoy.tasks import canvas, steps
from convoy.tasks.cancel import ALLOCATING, ALLOCATION_TIMED_OUT, abort_allocation
from convoy.tasks.celery import app
from convoy.tasks.orphans import end_orphaned_job
from convoy.tasks.parent import end_reservation, stop_overdue_test

log = logging.getLogger(__name__)

#: what publishing a message raises when the broker is unreachable
PUBLISH_ERRORS = (OperationalError, redis.RedisError)

#: the longest a scheduler sleeps without an event: a device going offline sends none
SAFETY_SECONDS = 5.0
#: a live device assigned this long without starting its job gets the job's message again (an assigned device
#: is idle: it starts its job within milliseconds, unless the message was lost with a dying process)
STALE_SECONDS = 15.0
#: how often a coordinator that is not the scheduler checks whether the scheduler's lease is free
STANDBY_SECONDS = 1.0


@dataclass(frozen=True)
class Planned:
    """A waiting job as read once: its allocator view and the member (job or child) of each requirement."""

    job: WaitingJob
    members: tuple[str, ...]
    multi: bool
    #: a multi job with ``reserve_data``
    reserve: bool = False


def device_view(summary: DeviceSummary) -> Device:
    """A registry entry as the allocator sees it."""
    return Device(name=summary.name, queues=frozenset(summary.queues), device_type=summary.device_type,
                  tags=frozenset(summary.tags), health=summary.health)


class Scheduler:
    """Decides which waiting jobs start, on which devices; one instance per coordinator process."""

    def __init__(self, store: JobStore, app: Celery, settings: Settings | None = None) -> None:
        self.store = store
        self.client = store.client
        self.app = app
        self.settings = settings or load_settings()
        #: waiting jobs already read (documents never change): job id -> plan
        self._plans: dict[str, Planned] = {}

    # --- the loop ------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Schedule while this process holds the lease; stand by while another does; until ``stop``."""
        lease = SchedulerLease(self.client)
        while not stop.is_set():
            try:
                if lease.try_acquire() is not None:
                    stop.wait(STANDBY_SECONDS)
                    continue
                log.info("scheduler: deciding (lease %s)", lease.me.describe())
                self._lead(lease, stop)
            except redis.RedisError as exc:
                log.warning("scheduler: Redis: %s; trying again", exc)
                stop.wait(STANDBY_SECONDS)
            except Exception:  # never let one bad pass stop scheduling for good
                log.exception("scheduler: pass failed; trying again")
                stop.wait(STANDBY_SECONDS)
        try:
            lease.release()
        except redis.RedisError:
            pass

    def _lead(self, lease: SchedulerLease, stop: threading.Event) -> None:
        last = schedule.last_event(self.client)
        # the scheduler before this one may have died between assigning devices and publishing: what it
        # assigned and no device started is sent again now (a duplicate is ignored by its device's worker)
        self.repair(device_summaries(self.client), {}, stale_before=time.time())
        self.decide()
        while not stop.is_set():
            deadline = timers.next_due(self.client)
            timeout = SAFETY_SECONDS if deadline is None else max(0.0, min(SAFETY_SECONDS, deadline - time.time()))
            last, _ = schedule.wait_for_event(self.client, last, timeout)
            if not lease.renew():
                log.warning("scheduler: lost the lease to another coordinator")
                return
            self.decide()

    # --- one pass ------------------------------------------------------------------
    def decide(self) -> list[Assignment]:
        """One scheduling pass (see the module's docstring); the assignments made."""
        self.fire_deadlines(time.time())
        plans = self.waiting()
        summaries = device_summaries(self.client)
        # repairs first: nothing runs in this process after a job is published, while its children allocate
        self.repair(summaries, plans)
        self.end_orphans(summaries)
        steps.repair(self.store)
        started = []
        if plans:
            for assignment in allocate([p.job for p in plans.values()], [device_view(d) for d in summaries]):
                if self.start(plans[assignment.job_id], assignment):
                    started.append(assignment)
        return started

    def waiting(self) -> dict[str, Planned]:
        """The jobs still waiting, planned; jobs that stopped waiting (cancelled) leave the waiting set."""
        plans, gone = self.read_waiting()
        schedule.drop(self.client, gone)
        return plans

    def read_waiting(self) -> tuple[dict[str, Planned], list[str]]:
        """The jobs still waiting, planned, and the ids in the waiting set that no longer wait (no write)."""
        entries = schedule.waiting(self.client)
        states = self.store.states(job_id for job_id, _ in entries)
        plans, gone = {}, []
        for job_id, submitted in entries:
            if states.get(job_id) != JobState.WAITING:
                self._plans.pop(job_id, None)
                gone.append(job_id)
                continue
            plan = self._plans.get(job_id) or self._plan(job_id, submitted)
            if plan is not None:
                self._plans[job_id] = plans[job_id] = plan
        return plans, gone

    def _plan(self, job_id: str, submitted: float) -> Planned | None:
        try:
            document = self.store.get(job_id)["document"]
            multi = is_multi(document)
            children = self.store.children(job_id) if multi else []
            members = tuple(children[i] if i is not None else job_id for i, _ in requirements(document))
            return Planned(waiting_job(job_id, document, submitted), members, multi,
                           reserve=multi and bool(document.get("reserve_data")))
        except (JobNotFound, KeyError, IndexError, TypeError, ValueError) as exc:  # one bad record stops no other
            log.error("scheduler: cannot plan job %s: %s", job_id, exc)
            return None

    def start(self, plan: Planned, assignment: Assignment) -> bool:
        """Assign the job its devices in one step, then publish it; False if the lab changed meanwhile."""
        devices = {plan.members[i]: name for i, name in sorted(assignment.devices.items())}
        ok, why = schedule.assign(self.client, plan.job.job_id, devices, now_iso())
        if not ok:
            log.info("scheduler: job %s not started: %s", plan.job.job_id, why)
            return False
        self._plans.pop(plan.job.job_id, None)
        job_id = plan.job.job_id
        if not plan.multi:
            try:
                canvas.single_job(self.app, job_id, devices[job_id]).apply_async()
            except PUBLISH_ERRORS as exc:  # the broker is Redis: it comes back; try again at a later pass
                self._unassign(devices)
                schedule.enqueue(self.client, job_id, plan.job.submitted)
                log.warning("scheduler: could not queue job %s: %s; it waits again", job_id, exc)
                return False
            return True
        with self.store.pipeline(transaction=False) as pipe:  # what its steps need, before any of them runs
            self.store.set_fields(job_id, pipe, device_children=list(devices),
                                  has_reserve="1" if plan.reserve else "")
            self.store.parent_started(job_id, pipe)
            pipe.execute()
        changed, _ = self.store.transition(job_id, JobState.PROVISION, allowed_from=[JobState.WAITING])
        if not changed:  # cancelled since the assignment: its children were cancelled too
            self._unassign(devices)
            return False
        self.store.start_phase(job_id, Phase.PROVISION)
        try:
            self._publish_chord(job_id, devices)
        except PUBLISH_ERRORS as exc:
            self._unassign(devices)
            abort_allocation(self.store, job_id, f"could not queue job: {exc}", self.settings)
            return False
        return True

    def _publish_chord(self, parent_id: str, devices: dict[str, str]) -> None:
        """Publish a multi job's chord; each child's chord membership is recorded before its message is
        sent (a replacement or a resend keeps the child in its chord)."""
        def record(child_id: str, part: dict[str, Any]) -> None:
            self.store.set_fields(child_id, chord_part=part)

        with canvas.chord_parts(record):
            canvas.multi_job(self.app, parent_id, devices, self.settings).apply_async()

    def _unassign(self, devices: dict[str, str]) -> None:
        for member, name in devices.items():
            unassign_device(self.client, name, member)

    # --- deadlines -----------------------------------------------------------------
    def fire_deadlines(self, now: float) -> None:
        """Fire every durable deadline that fell due (this lease holder is the one timer)."""
        for kind, job_id, at in timers.due(self.client, now):
            if not timers.fired(self.client, kind, job_id, at):
                continue  # moved (a reservation extended) or fired by another scheduler meanwhile
            if kind == timers.Timer.ALLOCATION:
                state = self.store.states([job_id]).get(job_id)
                schedule.drop(self.client, [job_id])
                if state in ALLOCATING:
                    log.info("scheduler: job %s: %s", job_id, ALLOCATION_TIMED_OUT)
                    abort_allocation(self.store, job_id, ALLOCATION_TIMED_OUT, self.settings)
            elif kind == timers.Timer.RESERVATION:
                end_reservation(self.store, job_id, None)
            elif kind == timers.Timer.GLOBAL:
                stop_overdue_test(self.store, job_id)

    # --- repairs -------------------------------------------------------------------
    def repair(self, summaries: list[DeviceSummary], plans: dict[str, Planned],
               stale_before: float | None = None) -> None:
        """Release assignments of ended jobs; move members off assigned devices that went offline; send
        again what was assigned before ``stale_before`` (default: :data:`STALE_SECONDS` ago) and not started."""
        stale_before = time.time() - STALE_SECONDS if stale_before is None else stale_before
        assigned = [(s, s.job_id) for s in summaries if s.job_id and s.occupancy == Health.ASSIGNED]
        records = self.store.fields([member for _, member in assigned], "state", "assigned_device")
        for (summary, member), record in zip(assigned, records, strict=True):
            if record["state"] is None or record["state"] in FINAL_STATES:
                unassign_device(self.client, summary.name, member)
            elif record["state"] != JobState.WAITING or record["assigned_device"] != summary.name:
                continue
            elif summary.health == Health.OFFLINE:
                self.replace(summary, self.store.get(member), summaries, plans)
            elif summary.since < stale_before:
                self.resend(summary.name, member, self.store.get(member))

    def end_orphans(self, summaries: list[DeviceSummary]) -> list[str]:
        """End the jobs whose device worker died (its lease ran out, or its process is gone from this host).

        A restarted worker does the same at its start and cleans the device; this covers a worker that
        stays dead (its supervisor killed, its host gone): the job fails now naming the device, and the
        device stays held by it until its worker is back to clean it.
        """
        busy = [s for s in summaries if s.job_id and s.occupancy == Health.BUSY]
        states = self.store.states(s.job_id for s in busy if s.job_id)
        running = [s for s in busy if states.get(s.job_id or "") not in (None, *FINAL_STATES)]
        ended = []
        for summary, holder in zip(running, lapsed_leases(self.client, "device", [s.name for s in running]),
                                   strict=True):
            if holder is None or summary.job_id is None:
                continue  # its worker lives
            if end_orphaned_job(self.store, summary.job_id, self.store.get(summary.job_id), summary.name, None):
                ended.append(summary.job_id)
        return ended

    def resend(self, device: str, member: str, record: dict[str, Any]) -> None:
        """Publish again the task of a member assigned long ago that its live device never started.

        A scheduler that died between assigning and publishing leaves this behind. Sending twice
        is harmless: the task starts a job only from ``waiting``, on its assigned device.
        """
        if record.get("parent_job_id"):
            part = self.chord_part(record)
            if part is None:  # no child of its chord was ever sent: the chord was never published
                self.publish_chord_again(record["parent_job_id"])
                return
            canvas.child_again(self.app, member, device, part).apply_async()
        else:
            canvas.single_job(self.app, member, device).apply_async()
        log.warning("scheduler: job %s, assigned to %s, never started; sent it again", member, device)

    def chord_part(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """A child's chord membership: its own, or derived from a sibling's (its publisher died before it)."""
        if record.get("chord_part"):
            return dict(record["chord_part"])
        parent = self.store.fields([record["parent_job_id"]], "device_children")[0]
        siblings = parent["device_children"] or []
        for row in self.store.fields(siblings, "chord_part"):
            if row["chord_part"] and record["job_id"] in siblings:
                part = canvas.sibling_part(row["chord_part"], siblings.index(record["job_id"]))
                self.store.set_fields(record["job_id"], chord_part=part)
                return part
        return None

    def publish_chord_again(self, parent_id: str) -> None:
        """Publish the chord of a multi job whose scheduler died after assigning its devices, before any send."""
        children = self.store.fields([parent_id], "device_children")[0]["device_children"] or []
        assigned = self.store.fields(children, "state", "assigned_device")
        if any(row["state"] != JobState.WAITING or not row["assigned_device"] for row in assigned) or \
                not self.store.once(parent_id, "chord-again"):
            return
        log.warning("scheduler: multi job %s was assigned its devices but never published; publishing it", parent_id)
        devices = {c: str(row["assigned_device"]) for c, row in zip(children, assigned, strict=True)}
        self._publish_chord(parent_id, devices)

    def replace(self, gone: DeviceSummary, record: dict[str, Any], summaries: list[DeviceSummary],
                plans: dict[str, Planned]) -> bool:
        """Give a member whose assigned device went offline another idle device, in its job's place in line."""
        member = gone.job_id
        assert member is not None
        owner = record.get("parent_job_id") or member
        owner_record = self.store.fields([owner], "document")[0]
        doc = record["document"] or {}
        need = requirement(doc, "replacement", frozenset((owner_record["document"] or {}).get("exclude_agents") or ()))
        me = WaitingJob(member, (need,), priority=int((owner_record["document"] or {}).get("job_priority") or 0),
                        submitted=self.store.submitted(owner))  # its job's place in line
        others = [p.job for p in plans.values()]
        chosen = next((a for a in allocate([me, *others], [device_view(d) for d in summaries])
                       if a.job_id == member), None)
        if chosen is None:
            return False
        new = chosen.devices[0]
        if not schedule.reassign(self.client, member, gone.name, new, now_iso()):
            return False
        if record.get("parent_job_id"):
            canvas.child_again(self.app, member, new, self.chord_part(record) or {}).apply_async()
        else:
            canvas.single_job(self.app, member, new).apply_async()
        log.warning("scheduler: device %s went offline before job %s started on it; moved it to %s",
                    gone.name, member, new)
        return True


# --- what users see ----------------------------------------------------------------
def waiting_reasons(store: JobStore, job_ids: list[str] | None = None) -> list[tuple[WaitingJob, WaitReason]]:
    """Every waiting job (or those of ``job_ids`` that wait), in scheduling order, with where it stands and why.

    What ``convoy queue-status`` and ``convoy show`` print: the allocator's own pass replayed on the
    registry as it is now (:func:`explain`), so the reason is the one the scheduler acts on.
    """
    plans, _ = Scheduler(store, app).read_waiting()  # a look: what no longer waits is the scheduler's to drop
    jobs = [p.job for p in plans.values()]
    devices = [device_view(d) for d in device_summaries(store.client)]
    wanted = plans.keys() if job_ids is None else [j for j in job_ids if j in plans]
    reasons = [(plans[j].job, explain(plans[j].job, devices, jobs)) for j in wanted]
    return sorted(reasons, key=lambda pair: pair[1].position)
