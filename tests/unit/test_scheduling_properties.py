"""Properties of the pure allocator on random small labs, checked against brute force.

Labs of up to 8 devices (queues, device types, tags, every health) and up to 6 waiting jobs
of 1-4 requirements, some excluding devices, with priorities and tied submit times. The
allocator's answer is replayed against a reference written from the rules alone, whose
matchings are found by trying every combination of devices:

* never a device twice, never a partial job; every device given is idle and fits;
* a job starts exactly when the rules allow: some assignment exists on the idle devices not
  given to jobs before it and not held back for a blocked job before it; so an assignment is
  always found when one exists, and a younger or lower job never takes a device an older or
  higher blocked job could use (backfill never delays the head);
* ``feasible`` is empty exactly when brute force matches the job on all registered devices;
* a simulation: a continuous stream of small jobs and one large job that fits the lab; the
  large job starts within as many rounds as the jobs older than it have work.

The examples are fixed (``derandomize``, no database); no deadline, no timing assertion.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convoy.coordinator.scheduling.allocator import allocate, explain, feasible, ordered
from convoy.coordinator.scheduling.matching import max_matching
from convoy.coordinator.scheduling.model import Assignment, Device, Health, Requirement, WaitingJob

CHECKED = settings(deadline=None, derandomize=True, database=None, max_examples=100,
                   suppress_health_check=[HealthCheck.too_slow])
QUEUES = ["q0", "q1", "q2"]
TYPES = ["t0", "t1"]
TAGS = ["usb", "gpu"]
NAMES = [f"d{i}" for i in range(8)]


# ------------------------------------------------------------------ strategies
@st.composite
def labs(draw: st.DrawFn) -> list[Device]:
    n = draw(st.integers(0, len(NAMES)))
    healths = st.sampled_from([Health.IDLE] * 4 + list(Health))
    return [Device(name,
                   frozenset(draw(st.lists(st.sampled_from(QUEUES), min_size=0, max_size=2))),
                   draw(st.sampled_from([None, *TYPES])),
                   frozenset(draw(st.lists(st.sampled_from(TAGS), max_size=2))),
                   draw(healths))
            for name in NAMES[:n]]


requirements = st.one_of(
    st.builds(lambda q, ex: Requirement(queue=q, exclude=frozenset(ex)),
              st.sampled_from(QUEUES), st.lists(st.sampled_from(NAMES), max_size=2)),
    st.builds(lambda t, tags: Requirement(device_type=t, tags=frozenset(tags)),
              st.sampled_from(TYPES), st.lists(st.sampled_from(TAGS), max_size=2)),
)


@st.composite
def queues_of_jobs(draw: st.DrawFn) -> list[WaitingJob]:
    n = draw(st.integers(0, 6))
    return [WaitingJob(f"j{i}", tuple(draw(st.lists(requirements, min_size=1, max_size=4))),
                       draw(st.sampled_from([0, 0, 5, 200])), float(draw(st.integers(0, 3))))
            for i in range(n)]


# ------------------------------------------------------------------ brute force
def brute_match(reqs: Sequence[Requirement], devices: Sequence[Device]) -> bool:
    """Whether some choice of distinct devices serves every requirement (every combination tried)."""
    options = [[d.name for d in devices if r.fits(d)] for r in reqs]
    return any(len(set(choice)) == len(choice) for choice in itertools.product(*options))


def brute_max(candidates: Sequence[Sequence[str]]) -> int:
    """The largest number of requirements served by distinct devices (every combination tried)."""
    best = 0
    for choice in itertools.product(*[[*c, None] for c in candidates]):
        chosen = [d for d in choice if d is not None]
        if len(set(chosen)) == len(chosen):
            best = max(best, len(chosen))
    return best


def check_basic(jobs: list[WaitingJob], devices: list[Device], result: list[Assignment]) -> None:
    by_name = {d.name: d for d in devices}
    by_id = {j.job_id: j for j in jobs}
    given = [name for a in result for name in a.devices.values()]
    assert len(given) == len(set(given)), "a device given twice"
    for a in result:
        reqs = by_id[a.job_id].requirements
        assert sorted(a.devices) == list(range(len(reqs))), "a partial assignment"
        for i, name in a.devices.items():
            assert by_name[name].health == Health.IDLE
            assert reqs[i].fits(by_name[name])


# ------------------------------------------------------------------ properties
@CHECKED
@given(labs(), queues_of_jobs())
def test_assignments_are_whole_distinct_idle_and_fitting(devices: list[Device], jobs: list[WaitingJob]) -> None:
    check_basic(jobs, devices, allocate(jobs, devices))


@CHECKED
@given(labs(), queues_of_jobs())
def test_a_job_starts_exactly_when_the_rules_allow(devices: list[Device], jobs: list[WaitingJob]) -> None:
    """Replay against the reference: found whenever possible, never on a device held back."""
    result = {a.job_id: a for a in allocate(jobs, devices)}
    check_basic(jobs, devices, list(result.values()))
    usable = {d.name for d in devices if d.health == Health.IDLE}
    for job in ordered(jobs):
        possible = brute_match(job.requirements, [d for d in devices if d.name in usable])
        assert (job.job_id in result) == possible, f"{job.job_id}: possible={possible}"
        if job.job_id in result:
            usable -= set(result[job.job_id].devices.values())
        elif brute_match(job.requirements, devices):  # blocked, but the lab can run it: holds back
            usable -= {d.name for d in devices for r in job.requirements if r.fits(d)}


@CHECKED
@given(labs(), queues_of_jobs())
def test_no_younger_or_lower_job_takes_a_device_a_blocked_older_one_could_use(
        devices: list[Device], jobs: list[WaitingJob]) -> None:
    result = {a.job_id: set(a.devices.values()) for a in allocate(jobs, devices)}
    order = ordered(jobs)
    for k, waiting in enumerate(order):
        if waiting.job_id in result or feasible(waiting, devices):
            continue
        could_use = {d.name for d in devices for r in waiting.requirements if r.fits(d)}
        for later in order[k + 1:]:
            assert not result.get(later.job_id, set()) & could_use, f"{later.job_id} took from {waiting.job_id}"


@CHECKED
@given(labs(), queues_of_jobs())
def test_feasible_is_brute_force_on_every_registered_device(devices: list[Device], jobs: list[WaitingJob]) -> None:
    for job in jobs:
        found = feasible(job, devices)
        assert (not found) == brute_match(job.requirements, devices)
        assert all(": " in message for message in found)


@CHECKED
@given(labs(), queues_of_jobs())
def test_explain_agrees_with_allocate(devices: list[Device], jobs: list[WaitingJob]) -> None:
    starting = {a.job_id for a in allocate(jobs, devices)}
    for job in jobs:
        reason = explain(job, devices, jobs)
        assert reason.starts_now == (job.job_id in starting)
        assert bool(reason.problems) == bool(feasible(job, devices))
        assert reason.starts_now or reason.problems or reason.shortfalls
        assert reason.message()


@CHECKED
@given(st.lists(st.lists(st.sampled_from(NAMES[:5]), max_size=4, unique=True), max_size=5))
def test_max_matching_is_maximum(candidates: list[list[str]]) -> None:
    matching = max_matching(candidates)
    assert len(set(matching.values())) == len(matching)
    assert all(d in candidates[r] for r, d in matching.items())
    assert len(matching) == brute_max(candidates)


# ------------------------------------------------------------------ no starvation
#: q0 is served by d0 d1 d2 and the shared d5; q1 by d3 d4 and d5
SIM_LAB = [Device("d0", frozenset({"q0"})), Device("d1", frozenset({"q0"})), Device("d2", frozenset({"q0"})),
           Device("d3", frozenset({"q1"})), Device("d4", frozenset({"q1"})), Device("d5", frozenset({"q0", "q1"}))]
#: every device at once, d5 on q1: the lab fits it only with the right matching
LARGE = tuple(Requirement(queue=q) for q in ["q0", "q0", "q0", "q1", "q1", "q1"])
small_jobs = st.tuples(st.lists(st.sampled_from(["q0", "q1"]), min_size=1, max_size=2), st.integers(1, 4))


@settings(deadline=None, derandomize=True, database=None, max_examples=100,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(small_jobs, min_size=1, max_size=3), min_size=1, max_size=6),
       st.integers(0, 8), st.integers(1, 4))
def test_a_large_job_is_not_starved_by_a_stream_of_small_ones(
        pattern: list[list[tuple[list[str], int]]], arrives: int, large_duration: int) -> None:
    """Small jobs arrive every round (the pattern repeats); the large one needs the whole lab.

    While the large job waits, some job older than it runs in every round (younger ones only
    get devices it cannot use, none), so it waits at most the older jobs' total work.
    """
    waiting: dict[str, WaitingJob] = {}
    duration: dict[str, int] = {}
    running: dict[str, tuple[int, list[str]]] = {}  # job -> (rounds left, devices)
    busy: set[str] = set()
    large_id = "large"
    started_at = None
    for t in range(200):
        for i, (queues, length) in enumerate(pattern[t % len(pattern)]):
            job_id = f"s{t}.{i}"
            waiting[job_id] = WaitingJob(job_id, tuple(Requirement(queue=q) for q in queues), 0, t + i / 10)
            duration[job_id] = length
        if t == arrives:
            waiting[large_id] = WaitingJob(large_id, LARGE, 0, t + 0.05)
            duration[large_id] = large_duration
            older_work = sum(duration[j] for j, job in waiting.items() if job.submitted < t + 0.05) + sum(
                left for left, _ in running.values())
        lab = [Device(d.name, d.queues, health=Health.BUSY if d.name in busy else Health.IDLE) for d in SIM_LAB]
        for a in allocate(list(waiting.values()), lab):
            del waiting[a.job_id]
            running[a.job_id] = (duration[a.job_id], list(a.devices.values()))
            busy.update(a.devices.values())
            if a.job_id == large_id:
                started_at = t
        if started_at is not None:
            break
        for job_id, (left, names) in list(running.items()):
            if left == 1:
                del running[job_id]
                busy.difference_update(names)
            else:
                running[job_id] = (left - 1, names)
    assert started_at is not None, "the large job never started"
    assert started_at - arrives <= older_work
