"""Which waiting jobs start now, and on which idle devices: a pure function of plain data.

The rules, in the order a pass applies them:

* **Order.** Jobs are taken by priority (higher first), then submit time (older first),
  then job id (so equal times still give one order).
* **All or nothing.** A job starts only if every requirement gets its own device at once: a
  maximum bipartite matching (Hopcroft-Karp) of its requirements to the usable idle devices
  that fit them; if any assignment exists, it is found. A job that does not start holds
  nothing.
* **A device once.** A device given to a job is out of the pass.
* **Reservation (backfill without delay).** A job that cannot start but that the lab could
  run (its requirements matched against every registered device, whatever its health)
  holds back, for the rest of the pass, *every* device that fits any of its requirements:
  idle ones, and busy, assigned, offline or maintenance ones that may come back. A job
  later in the order (younger, or of lower priority) can only start on idle devices held
  back by no job before it. So a younger job never takes a device an older job of equal or
  higher priority could use: the head of the queue is never delayed by backfill, and a
  large job is not starved by a stream of small ones (each device it needs, once free,
  waits for it rather than going to a newer job). The cost: an idle device that fits a
  blocked older job stays idle until that job can start, even if a younger job could have
  used it meanwhile; without job durations no backfill can be proven harmless.
* **Unsatisfiable jobs hold nothing.** A job the registered devices can never run (rejected
  at submission; a device leaving the registry can make one) neither starts nor holds
  devices back; :func:`feasible` names what is missing.
* **Early stop.** When no usable idle device is left, the pass ends.

:func:`explain` replays the same pass up to one job and says why it waits.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .feasibility import feasible, label, problems
from .index import DeviceIndex
from .matching import Deficit, deficits, max_matching
from .model import Assignment, Device, Health, Requirement, WaitingJob

__all__ = ["Shortfall", "WaitReason", "allocate", "explain", "feasible", "ordered"]


def ordered(jobs: Iterable[WaitingJob]) -> list[WaitingJob]:
    """The scheduling order: priority (higher first), submit time, job id."""
    return sorted(jobs, key=lambda j: j.order)


def allocate(jobs: Iterable[WaitingJob], devices: Iterable[Device]) -> list[Assignment]:
    """The jobs that start now, in scheduling order, each with a device per requirement."""
    waiting = _unique(jobs)
    sweep = _Pass(DeviceIndex(devices))
    out = []
    for job in ordered(waiting):
        if not sweep.free:
            break
        assignment = sweep.consider(job)
        if assignment is not None:
            out.append(assignment)
    return out


class _Pass:
    """One pass over the waiting jobs in order; remembers why each device is out of reach."""

    def __init__(self, index: DeviceIndex) -> None:
        self.index = index
        self.free: set[str] = set(index.idle)  # idle, not given, not held back
        self.given_to: dict[str, str] = {}  # device -> job starting on it in this pass
        self.held_for: dict[str, str] = {}  # device -> first blocked job holding it back
        self._held_keys: set[tuple[object, ...]] = set()

    def usable(self, job: WaitingJob) -> list[list[str]]:
        """Per requirement, the devices it could get now, preferred first."""
        return [[n for n in self.index.fitting(r) if n in self.free] for r in job.requirements]

    def consider(self, job: WaitingJob) -> Assignment | None:
        """Start ``job`` if it can; otherwise hold back what it needs (if it can ever run)."""
        if all(not self.free.isdisjoint(self.index.fitting_set(r)) for r in job.requirements):
            matching = max_matching(self.usable(job))
            if len(matching) == len(job.requirements):
                for name in matching.values():
                    self.free.discard(name)
                    self.given_to[name] = job.job_id
                return Assignment(job.job_id, dict(sorted(matching.items())))
        if self.index.satisfiable(job):
            for req in job.requirements:
                self._hold(req, job.job_id)
        return None

    def _hold(self, req: Requirement, job_id: str) -> None:
        if req.key in self._held_keys:
            return  # an older blocked job holds all of these already
        self._held_keys.add(req.key)
        for name in self.index.fitting(req):
            if name not in self.given_to and name not in self.held_for:
                self.held_for[name] = job_id
                self.free.discard(name)


# ------------------------------------------------------------------ why a job waits
@dataclass(frozen=True)
class Shortfall:
    """Requirements of a waiting job that the usable idle devices cannot all serve.

    ``devices`` counts every device that fits them by where it is: ``idle`` (usable now),
    ``held`` (idle but held back for the older jobs in ``held_for``), ``assigned`` (also
    those an older job gets in this pass), ``busy``, ``offline``, ``maintenance``.
    """

    labels: tuple[str, ...]
    description: str
    needed: int
    devices: Mapping[str, int]
    held_for: tuple[str, ...] = ()

    def message(self) -> str:
        older = f"older job{'s' * (len(self.held_for) > 1)} {', '.join(self.held_for)}"
        parts = [f"{n} idle held for {older}" if state == "held" else f"{n} {state}"
                 for state, n in self.devices.items() if n]
        fits = sum(self.devices.values())
        have = f"{fits} fit: {', '.join(parts)}" if fits else "none registered"
        return (f"{', '.join(self.labels)} ({self.description}): needs {self.needed} "
                f"device{'s' * (self.needed > 1)}, {self.devices.get('idle', 0)} usable; {have}")


@dataclass(frozen=True)
class WaitReason:
    """Where a waiting job stands: its place in the order and what it lacks (or why it never can)."""

    job_id: str
    position: int  # 1-based, in the scheduling order
    waiting: int
    starts_now: bool = False
    shortfalls: tuple[Shortfall, ...] = ()
    problems: tuple[str, ...] = field(default=())

    def message(self) -> str:
        if self.problems:
            return "can never start: " + "; ".join(self.problems)
        where = f"position {self.position} of {self.waiting}"
        if self.starts_now:
            return f"{where}; starts at the next scheduling pass"
        return f"{where}; waits for " + "; ".join(s.message() for s in self.shortfalls)


def explain(job: WaitingJob, devices: Iterable[Device], jobs: Iterable[WaitingJob]) -> WaitReason:
    """Why ``job`` waits among ``jobs`` (it is added if missing): the pass replayed up to it."""
    index = DeviceIndex(devices)
    waiting = ordered(_unique([*(j for j in jobs if j.job_id != job.job_id), job]))
    position = 1 + next(i for i, j in enumerate(waiting) if j.job_id == job.job_id)
    found = problems(job, index)
    if found:
        return WaitReason(job.job_id, position, len(waiting), problems=tuple(found))
    sweep = _Pass(index)
    for older in waiting[:position - 1]:
        sweep.consider(older)
    usable = sweep.usable(job)
    matching = max_matching(usable)
    if len(matching) == len(job.requirements):
        return WaitReason(job.job_id, position, len(waiting), starts_now=True)
    short = tuple(_shortfall(job, deficit, sweep) for deficit in deficits(usable, matching))
    return WaitReason(job.job_id, position, len(waiting), shortfalls=short)


def _shortfall(job: WaitingJob, deficit: Deficit, sweep: _Pass) -> Shortfall:
    members = [job.requirements[i] for i in deficit.requirements]
    fits = sorted({n for r in members for n in sweep.index.fitting(r)})
    counts = dict.fromkeys(["idle", "held", "assigned", "busy", "offline", "maintenance"], 0)
    held_for: list[str] = []
    for name in fits:
        health = sweep.index.devices[name].health
        if name in sweep.given_to:
            counts["assigned"] += 1
        elif health == Health.IDLE and name in sweep.held_for:
            counts["held"] += 1
            if sweep.held_for[name] not in held_for:
                held_for.append(sweep.held_for[name])
        else:
            counts[str(health)] += 1
    labels = list(dict.fromkeys(label(job, i) for i in deficit.requirements))
    descriptions = list(dict.fromkeys(r.describe() for r in members))
    return Shortfall(tuple(labels), " / ".join(descriptions), len(members), counts, tuple(held_for))


def _unique(jobs: Iterable[WaitingJob]) -> list[WaitingJob]:
    out: dict[str, WaitingJob] = {}
    for job in jobs:
        if job.job_id in out:
            raise ValueError(f"job {job.job_id} is waiting twice")
        out[job.job_id] = job
    return list(out.values())
