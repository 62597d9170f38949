"""The pure allocator's decision time: one ``allocate()`` pass over W waiting jobs and D devices.

For D = 100, 1,000 devices and W = 100, 1,000 waiting jobs, random labs and queues
(fixed seed, printed) are built, then each scenario is decided once after a warm-up:

* the lab: about 8 devices per queue, 1 in 10 serving a second queue, one device_type per
  ~25 devices, tags from usb/gpu/wifi/hdmi; health *steady* (30 % idle, 55 % busy, 5 %
  each assigned/offline/maintenance) or *all idle* (the start of a day);
* the queue: 60 % single-device jobs, 30 % Testflinger multi jobs of 2-4 children, 10 %
  LAVA jobs of 1-3 roles (count 1-2, device_type, maybe a tag); 5 % exclude 1-2 devices;
  priorities 0 (most), 50, 100, 200; only jobs the lab can run (the others are refused at
  submission).

Also shown at the largest size: ``explain()`` for the last job in the order (a replay of
the whole pass, what ``convoy queue-status`` will call) and ``feasible()`` per job.
No cluster, no Redis; the target is DESIGN.md's: p50 <= 50 ms at 1,000 x 1,000.

**Soak** (``--soak-jobs N``, default 30; 0 skips it): a real embedded cluster of 6 emulated
devices, the lab of issue 9 (``soak-a`` and ``soak-b`` served by two devices each, ``soak-d5``
serving ``soak-c`` and ``soak-d``, each of which has no other device, ``soak-e`` by one),
N random multi jobs of 2-4 children (each fits the lab; priority 0, 50 or 100; each child's
test_cmds a 0.2-1 s sleep), from the printed seed, submitted at once by 3 processes.
Printed: drain time (first submit -> last job complete), busy device-seconds (each child from
its provision start to the end of its cleanup) and utilization = busy / (6 x drain), next to
the same allocator replayed offline on the recorded durations (all jobs waiting at t = 0 in
their real order; each child holds its device for its recorded duration; ``allocate()`` again
at every release), and the ratio (target >= 90 %). Also: device released -> next assignment,
and assignment -> the child's provision start (what separates the two).

**Allocation -> parent's next phase** (``--latency-sizes``, default 1,10,50,100; empty skips
it): ``bench/allocation_latency.py``'s measurement (last child 'allocated' -> parent
'allocated', both Redis TIME; one device and queue per child) through the scheduler, next to
a bare Celery task round trip (``noop.apply_async().get()``, one ``-P threads -c 1`` peer
worker on the same Redis server) measured interleaved in the same run; target p50 <= 3 round
trips at every N.  ``allocation_latency.py`` itself compares the whole job with a bare chord.

    .venv/bin/python bench/scheduler.py [--scenarios 20] [--seed N] [--soak-jobs 30]
        [--latency-sizes 1,10,50,100] [--latency-jobs 10] [--no-allocator] [--keep]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import pairwise
from typing import Any

from common import (
    PeerWorkers,
    first,
    fmt_ms,
    log,
    machine_line,
    scratch_dir,
    start_cluster,
    state_events,
    summary,
    table,
    teardown,
    use_peer_db,
)
from convoy.coordinator.scheduling.allocator import allocate, explain, feasible, ordered
from convoy.coordinator.scheduling.feasibility import problems
from convoy.coordinator.scheduling.index import DeviceIndex
from convoy.coordinator.scheduling.model import Device, Health, Requirement, WaitingJob
from convoy.coordinator.scheduling.requirements import requirements, waiting_job

TAGS = ["usb", "gpu", "wifi", "hdmi"]
STEADY = {Health.IDLE: 30, Health.ASSIGNED: 5, Health.BUSY: 55, Health.OFFLINE: 5, Health.MAINTENANCE: 5}
ALL_IDLE = {Health.IDLE: 1}
TARGET_MS = 50.0


def make_lab(rng: random.Random, n: int, health: dict[Health, int]) -> list[Device]:
    queues = [f"queue{i}" for i in range(max(2, n // 8))]
    types = [f"type{i}" for i in range(max(2, n // 25))]
    states, weights = list(health), list(health.values())
    lab = []
    for i in range(n):
        served = {rng.choice(queues)}
        if rng.random() < 0.1:
            served.add(rng.choice(queues))
        tags = frozenset(t for t in TAGS if rng.random() < 0.3)
        lab.append(Device(f"dev{i:04d}", frozenset(served), rng.choice(types), tags,
                          rng.choices(states, weights)[0]))
    return lab


def make_job(rng: random.Random, i: int, lab: list[Device]) -> WaitingJob:
    kind = rng.random()
    queues = sorted({q for d in lab for q in d.queues})
    types = sorted({d.device_type for d in lab if d.device_type})
    exclude = frozenset(rng.choice(lab).name for _ in range(rng.randint(1, 2))) if rng.random() < 0.05 else frozenset()
    if kind < 0.6:
        reqs = [Requirement(queue=rng.choice(queues), exclude=exclude, label="job_queue")]
    elif kind < 0.9:
        home = rng.choice(queues)
        reqs = [Requirement(queue=home if rng.random() < 0.5 else rng.choice(queues), exclude=exclude,
                            label=f"provision_data.jobs[{k}]") for k in range(rng.randint(2, 4))]
    else:
        reqs = []
        for r in range(rng.randint(1, 3)):
            tags = frozenset([rng.choice(TAGS)]) if rng.random() < 0.3 else frozenset()
            reqs += [Requirement(device_type=rng.choice(types), tags=tags, label=f"role r{r}")] * rng.randint(1, 2)
    priority = rng.choice([0, 0, 0, 0, 50, 100, 200])
    return WaitingJob(f"job{i:05d}", tuple(reqs), priority, float(i))


def make_queue(rng: random.Random, n: int, lab: list[Device]) -> list[WaitingJob]:
    index = DeviceIndex(lab)
    jobs: list[WaitingJob] = []
    i = 0
    while len(jobs) < n:
        job = make_job(rng, i, lab)
        i += 1
        if not problems(job, index):
            jobs.append(job)
    return jobs


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=20, help="random labs and queues per size")
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh one (printed)")
    parser.add_argument("--no-allocator", action="store_true", help="skip the allocator's decision time")
    parser.add_argument("--soak-jobs", type=int, default=30, help="random multi jobs of the soak (0: no soak)")
    parser.add_argument("--latency-sizes", default="1,10,50,100",
                        help="N (children per job) for allocation -> next phase ('': skip it)")
    parser.add_argument("--latency-jobs", type=int, default=10, help="measured jobs (and round trips) per N")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories (worker logs)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    if not args.no_allocator:
        decision_time(args, seed)
    if args.soak_jobs > 0:
        print()
        soak(args.soak_jobs, seed, keep=args.keep)
    sizes = sorted({int(x) for x in args.latency_sizes.split(",") if x.strip()})
    if sizes:
        print()
        next_phase_latency(sizes, args.latency_jobs, keep=args.keep)


def decision_time(args: argparse.Namespace, seed: int) -> None:
    """The allocator alone: one pass over random labs and queues of each size."""
    print(f"== scheduler: allocate() decision time ({machine_line()})")
    print(f"   seed {seed}; {args.scenarios} random scenarios per row, each decided once after a warm-up pass")
    print()
    rows = []
    largest: tuple[list[Device], list[WaitingJob]] | None = None
    for health_name, health in [("steady", STEADY), ("all idle", ALL_IDLE)]:
        for n_devices in (100, 1000):
            for n_jobs in (100, 1000):
                rng = random.Random(f"{seed}-{health_name}-{n_devices}-{n_jobs}")
                seconds, started, devices_given = [], [], []
                for _ in range(args.scenarios):
                    lab = make_lab(rng, n_devices, health)
                    queue = make_queue(rng, n_jobs, lab)
                    allocate(queue, lab)  # warm-up: imports, allocator caches of the interpreter
                    took, result = timed(lambda lab=lab, queue=queue: allocate(queue, lab))
                    seconds.append(took)
                    started.append(len(result))
                    devices_given.append(sum(len(a.devices) for a in result))
                    if health is STEADY and n_devices == 1000 and n_jobs == 1000:
                        largest = (lab, queue)
                s = summary(seconds)
                target = ""
                if n_devices == 1000 and n_jobs == 1000:
                    target = f"<= {TARGET_MS:.0f}  " + ("met" if s["p50"] <= TARGET_MS else "MISSED")
                rows.append([f"{health_name}: {n_devices:,} devices x {n_jobs:,} jobs", str(int(s["n"])),
                             fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["max"]),
                             f"{sum(started) / len(started):.0f}", f"{sum(devices_given) / len(devices_given):.0f}",
                             target])
    print(table(["allocate()", "n", "p50 ms", "p95 ms", "max ms", "jobs started", "devices given",
                 "target p50 ms"], rows))
    if largest is not None:
        lab, queue = largest
        last = ordered(queue)[-1]
        explain_s = [timed(lambda: explain(last, lab, queue))[0] for _ in range(args.scenarios)]
        feasible_s = [timed(lambda job=job: feasible(job, lab))[0] for job in queue[:200]]
        print()
        print(table(["at 1,000 devices x 1,000 jobs (steady)", "n", "p50 ms", "p95 ms", "max ms"], [
            ["explain(last job in the order)", *_cells(summary(explain_s))],
            ["feasible(one job), index built each call", *_cells(summary(feasible_s))],
        ]))


def _cells(s: dict[str, float]) -> list[str]:
    return [str(int(s["n"])), fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["max"])]


# --- the soak: a real cluster, then the allocator replayed offline -----------------------------------
SOAK_SERVES = [("a",), ("a",), ("b",), ("b",), ("c", "d"), ("e",)]
SOAK_SUBMITTERS = 3
SOAK_PRIORITIES = (0, 50, 100)
UTILIZATION_TARGET = 0.90


def soak_lab() -> list[Any]:
    """The six emulated devices of issue 9's lab (DeviceConfigs, each with its own loopback address)."""
    from convoy.config.devices import DeviceConfig
    from convoy.connectors.emulated.addresses import assign_addresses

    return assign_addresses(DeviceConfig(name=f"soak-d{i}", queues=tuple(f"soak-{q}" for q in serves),
                                         connector="emulated")
                            for i, serves in enumerate(SOAK_SERVES, start=1))


def soak_jobs(rng: random.Random, lab: list[Device], n: int) -> list[dict[str, Any]]:
    """``n`` multi jobs of 2-4 children that the lab can run, random priorities, 0.2-1 s sleeps."""
    queues = sorted({q for d in lab for q in d.queues})
    jobs: list[dict[str, Any]] = []
    while len(jobs) < n:
        children = [{"job_queue": rng.choice(queues), "test_data": {"test_cmds": f"sleep {rng.uniform(0.2, 1):.1f}"}}
                    for _ in range(rng.randint(2, 4))]
        job = {"job_queue": "multi", "provision_data": {"jobs": children},
               "job_priority": rng.choice(SOAK_PRIORITIES)}
        if not feasible(waiting_job("candidate", job, 0.0), lab):
            jobs.append(job)
    return jobs


def submitter(batch: list[dict[str, Any]], barrier: Any, results: Any, redis_url: str) -> None:
    """One submitting process: waits for the others, submits its jobs in order, returns (id, submit time)."""
    os.environ["CONVOY_REDIS_URL"] = redis_url
    from convoy.coordinator import api

    submitted: dict[str, float] = {}
    enqueue = api.enqueue

    def recording(target: Any, job_id: str, at: float, deadline: float | None = None) -> None:
        submitted[job_id] = at  # the time the scheduler orders by
        enqueue(target, job_id, at, deadline)

    api.enqueue = recording  # type: ignore[assignment]
    barrier.wait()
    ids = [api.submit_job(job) for job in batch]
    results.put([(job_id, submitted[job_id]) for job_id in ids])


def submit_from_processes(jobs: list[dict[str, Any]], redis_url: str) -> dict[str, float]:
    """The jobs, dealt to SOAK_SUBMITTERS processes that start together; job id -> submit time."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(SOAK_SUBMITTERS), ctx.Queue()
    procs = [ctx.Process(target=submitter, args=(jobs[i::SOAK_SUBMITTERS], barrier, results, redis_url))
             for i in range(SOAK_SUBMITTERS)]
    for proc in procs:
        proc.start()
    submitted: dict[str, float] = {}
    for _ in procs:
        submitted.update(results.get(timeout=120))
    for proc in procs:
        proc.join(timeout=30)
    return submitted


@dataclass(frozen=True)
class ChildHold:
    """One child on its device: assigned, provision started, cleanup ended (epoch seconds)."""

    job_id: str
    index: int
    device: str
    assigned: float
    start: float
    end: float

    @property
    def busy(self) -> float:
        return self.end - self.start


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def child_holds(store: Any, job_id: str) -> list[ChildHold]:
    out = []
    for index, child in enumerate(store.children(job_id)):
        record, phases = store.get(child), store.phases(child)
        out.append(ChildHold(job_id, index, record["device"], _epoch(record["assigned_at"]),
                             _epoch(phases["provision"]["started"]), _epoch(phases["cleanup"]["ended"])))
    return out


def replay(jobs: list[WaitingJob], holds: dict[str, dict[int, float]], lab: list[Device]) -> float:
    """The allocator alone on the recorded durations: every job waiting at t = 0; the makespan.

    Each job's requirement i holds the device it gets for ``holds[job][i]`` seconds; the allocator
    decides again at every release, as the scheduler does on its release events.
    """
    free_at: dict[str, float] = {}
    waiting, now = list(jobs), 0.0
    while waiting:
        view = [replace(d, health=Health.BUSY if free_at.get(d.name, 0.0) > now else Health.IDLE) for d in lab]
        started = allocate(waiting, view)
        for assignment in started:
            for i, name in assignment.devices.items():
                free_at[name] = now + holds[assignment.job_id][i]
        gone = {a.job_id for a in started}
        waiting = [j for j in waiting if j.job_id not in gone]
        later = [t for t in free_at.values() if t > now]
        if waiting and not later:
            raise RuntimeError(f"replay stuck at t={now:.2f}s with {len(waiting)} jobs waiting")
        now = min(later) if later else now
    return max(free_at.values(), default=0.0)


def soak(n: int, seed: int, *, keep: bool) -> None:
    from convoy.workers.embedded.cluster import EmbeddedCluster

    load = os.getloadavg()[0]
    configs = soak_lab()
    lab = [Device(d.name, frozenset(d.queues), d.device_type, frozenset(d.tags)) for d in configs]
    jobs = soak_jobs(random.Random(f"{seed}-soak"), lab, n)
    scratch = scratch_dir("convoy-bench-soak-")
    cluster = None
    try:
        cluster = EmbeddedCluster(scratch / "cluster", configs, log=lambda m: log(f"cluster: {m}"))
        cluster.start()
        assert cluster.redis_url is not None
        from convoy.coordinator.api import job_results, wait_for_job
        from convoy.coordinator.state.connection import get_store

        log(f"soak: {n} jobs from {SOAK_SUBMITTERS} processes")
        submitted = submit_from_processes(jobs, cluster.redis_url)
        store, client = get_store(), cluster.client()
        finals = {job_id: wait_for_job(job_id, timeout=1800) for job_id in submitted}
        outcomes = {job_id: job_results(job_id)["outcome"] for job_id in submitted}
        done = {job_id: first(state_events(client, job_id), "complete") or 0.0 for job_id in submitted}
        holds = {job_id: child_holds(store, job_id) for job_id in submitted}
        documents = {job_id: store.get(job_id)["document"] for job_id in submitted}
        report_soak(n, seed, lab, submitted, finals, outcomes, done, holds, documents, load)
        if keep:
            print(f"\n  logs: {scratch}")
    finally:
        if cluster is not None:
            cluster.stop()
        if not keep:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)


def report_soak(n: int, seed: int, lab: list[Device], submitted: dict[str, float], finals: dict[str, str],
                outcomes: dict[str, str], done: dict[str, float], holds: dict[str, list[ChildHold]],
                documents: dict[str, dict[str, Any]], load: float) -> None:
    children = [h for hs in holds.values() for h in hs]
    drain = max(done.values()) - min(submitted.values())
    busy = sum(h.busy for h in children)
    utilization = busy / (len(lab) * drain)
    waiting = [waiting_job(job_id, documents[job_id], at) for job_id, at in submitted.items()]
    durations = {job_id: {k: hs[i].busy for k, (i, _) in enumerate(requirements(documents[job_id]))
                          if i is not None}  # multi jobs: every requirement is a child
                 for job_id, hs in holds.items()}
    makespan = replay(waiting, durations, lab)
    replayed = busy / (len(lab) * makespan)
    ratio = utilization / replayed
    sizes = [len(hs) for hs in holds.values()]
    priorities = sorted(int(documents[j].get("job_priority") or 0) for j in submitted)
    print(f"== scheduler: soak on a real cluster ({machine_line()}; 1-min load at the soak's start {load:.2f})")
    print(f"   seed {seed}; {n} multi jobs of {min(sizes)}-{max(sizes)} children ({len(children)} in all), "
          f"priorities {dict((p, priorities.count(p)) for p in SOAK_PRIORITIES)}, submitted at once by "
          f"{SOAK_SUBMITTERS} processes; lab: " + ", ".join(f"{d.name} ({','.join(sorted(d.queues))})" for d in lab))
    bad = {j: (finals[j], outcomes[j]) for j in submitted if (finals[j], outcomes[j]) != ("complete", "pass")}
    print(f"   every job complete and passed: {'yes' if not bad else f'NO: {bad}'}")
    print()
    verdict = "met" if ratio >= UTILIZATION_TARGET else "MISSED"
    print(table(["", "drain s", "busy device-s", "utilization", "of replay", "target"], [
        ["convoy (real workers)", f"{drain:.1f}", f"{busy:.1f}", f"{utilization:.1%}", f"{ratio:.1%}",
         f">= {UTILIZATION_TARGET:.0%}  {verdict}"],
        ["allocator replayed offline", f"{makespan:.1f}", f"{busy:.1f}", f"{replayed:.1%}", "100%", ""],
    ]))
    by_device: dict[str, list[ChildHold]] = {}
    for h in children:
        by_device.setdefault(h.device, []).append(h)
    gaps = [after.assigned - before.end for hs in by_device.values()
            for before, after in pairwise(sorted(hs, key=lambda h: h.assigned))]
    pickup = [h.start - h.assigned for h in children]
    overlaps = sum(1 for g in gaps if g < 0)
    print()
    print(table(["between holds (s -> ms)", "n", "p50 ms", "p95 ms", "max ms"], [
        ["device released -> its next assignment (idle, maybe held for a job)", *_cells(summary(gaps))],
        ["assigned -> the child's provision starts", *_cells(summary(pickup))],
    ]))
    if overlaps:
        print(f"   !! {overlaps} device(s) assigned again before their previous job released them")


# --- allocation -> the parent's next phase, next to a bare Celery round trip --------------------------
ROUND_TRIP_TARGET = 3.0


def next_phase_latency(sizes: list[int], jobs: int, *, keep: bool, warmup: int = 1, idle: float = 0.2) -> None:
    """``allocation_latency.py``'s (a) through the scheduler, interleaved with bare Celery round trips."""
    from allocation_latency import measure_convoy

    top = max(sizes)
    load = os.getloadavg()[0]
    scratch = scratch_dir("convoy-bench-next-phase-")
    cluster = peers = None
    try:
        cluster = start_cluster({f"bench-{i}": 1 for i in range(1, top + 1)}, scratch / "cluster")
        url = use_peer_db(cluster)
        peers = PeerWorkers(url, scratch / "peer-logs")
        peers.add("peer-1", ["peer-1"], concurrency=1)
        peers.wait_ready()
        import peer_celery
        from convoy.coordinator.api import submit_job, wait_for_job

        client = cluster.client()
        rows = []
        for n in sizes:
            latency, to_test, trips, failed = [], [], [], 0
            for k in range(warmup + jobs):
                measured = k >= warmup
                result = measure_convoy(client, submit_job, wait_for_job, n, None)
                time.sleep(idle)
                t0 = time.perf_counter()
                peer_celery.noop.apply_async(queue="peer-1").get(timeout=30)
                trip = time.perf_counter() - t0
                time.sleep(0.05)
                if not result["ok"]:
                    failed += 1
                    continue
                if measured:
                    latency.append(result["latency"])
                    to_test.append(result["latency"] + result["alloc_to_test"])
                    trips.append(trip)
            lat, test, rt = summary(latency), summary(to_test), summary(trips)
            ratio = lat["p50"] / rt["p50"]
            rows.append([f"N={n}", str(int(lat["n"])), fmt_ms(lat["p50"]), fmt_ms(lat["p95"]), fmt_ms(test["p50"]),
                         fmt_ms(rt["p50"]), f"{ratio:.2f}x",
                         f"<= {ROUND_TRIP_TARGET:g}x  " + ("met" if ratio <= ROUND_TRIP_TARGET else "MISSED")
                         + (f"  ({failed} job(s) failed)" if failed else "")])
            log(f"next phase: N={n} done")
        print(f"== scheduler: last child allocated -> parent's next phase ({machine_line()}; "
              f"1-min load at this part's start {load:.2f})")
        print(f"   one device and queue per child (bench-1..bench-{top}); {jobs} jobs per N (+{warmup} warm-up), "
              f"each followed by one bare Celery round trip (noop.apply_async().get(), 1 worker -P threads -c 1)")
        print()
        print(table(["", "n", "-> parent 'allocated' p50 ms", "p95 ms", "-> parent 'test' p50 ms",
                     "round trip p50 ms", "p50 / round trip", "target"], rows))
        if keep:
            print(f"\n  logs: {scratch}")
    finally:
        teardown(cluster=cluster, peers=peers, scratch=scratch, keep=keep)


if __name__ == "__main__":
    main()
