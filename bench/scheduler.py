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

    .venv/bin/python bench/scheduler.py [--scenarios 20] [--seed N]
"""
from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from common import fmt_ms, machine_line, summary, table
from convoy.coordinator.scheduling.allocator import allocate, explain, feasible, ordered
from convoy.coordinator.scheduling.feasibility import problems
from convoy.coordinator.scheduling.index import DeviceIndex
from convoy.coordinator.scheduling.model import Device, Health, Requirement, WaitingJob

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
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
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


if __name__ == "__main__":
    main()
