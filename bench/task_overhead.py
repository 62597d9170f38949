#!/usr/bin/env python3
"""Per-job overhead: a no-op single-device convoy job next to a bare Celery task round trip.

One run, one machine, one Redis server:

* **convoy**: ``submit_job({"job_queue": "bench-1"})`` (no ``test_cmds`` unless
  ``--test-cmds`` is given) → ``wait_for_job`` returns, on an embedded cluster
  with one emulated device (its own Celery worker, threads pool, concurrency 1)
  and the coordinator worker;
* **bare Celery**: ``noop.apply_async(queue="peer-1").get()`` on one peer worker
  of the same kind (``celery -A peer_celery worker -P threads -c 1``), its
  broker and result backend another database of the same Redis server.

The two are interleaved (one convoy job, one bare round trip, ...) so that
machine noise hits both alike; the first ``--warmup`` of each are discarded.
convoy's time is then broken down from the job's state events (``ts`` =
Redis server time, the same host clock as the client's ``time.time()``).

    .venv/bin/python bench/task_overhead.py [--iterations 30] [--warmup 3] [--test-cmds true]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PeerWorkers,
    first,
    fmt_ms,
    log,
    machine_line,
    output_event_time,
    peer_url,
    phase_events,
    scratch_dir,
    start_cluster,
    state_events,
    summary,
    table,
    teardown,
)

QUEUE = "bench-1"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=30, help="measured jobs (and bare round trips)")
    ap.add_argument("--warmup", type=int, default=3, help="discarded first iterations")
    ap.add_argument("--test-cmds", default=None,
                    help="the job's test_data.test_cmds (default: none, i.e. provision + cleanup only)")
    ap.add_argument("--idle", type=float, default=0.2,
                    help="seconds to wait after a convoy job before the next (the device's Celery task "
                         "ends a few ms after the job's 'complete')")
    ap.add_argument("--back-to-back", type=int, default=10,
                    help="extra convoy jobs submitted back to back (no idle wait), shown separately")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = ap.parse_args(argv)

    scratch = scratch_dir("convoy-bench-overhead-")
    cluster = peers = None
    try:
        cluster = start_cluster({QUEUE: 1}, scratch / "cluster")
        url = peer_url(cluster.redis_url)
        os.environ["PEER_REDIS_URL"] = url
        client = cluster.client()
        import redis

        redis.Redis.from_url(url).flushdb()
        peers = PeerWorkers(url, scratch / "peer-logs")
        peers.add("peer-1", ["peer-1"], concurrency=1)
        peers.wait_ready()

        import peer_celery
        from convoy.coordinator.api import submit_job, wait_for_job

        job: dict = {"job_queue": QUEUE}
        if args.test_cmds is not None:
            job["test_data"] = {"test_cmds": args.test_cmds}

        ping = []
        for _ in range(200):
            t = time.perf_counter()
            client.ping()
            ping.append(time.perf_counter() - t)

        convoy_total, bare_total = [], []
        rows: dict[str, list[float]] = {k: [] for k in (
            "submit", "to_provision", "provision_state", "provision_phase", "ssh_check", "test_phase", "to_cleanup_gap",
            "cleanup_state", "notify")}
        failures = 0
        total_iters = args.warmup + args.iterations
        log(f"{total_iters} iterations ({args.warmup} warm-up), job {job}")
        for i in range(total_iters):
            measured = i >= args.warmup
            # --- convoy -------------------------------------------------------------
            t0_wall, t0 = time.time(), time.perf_counter()
            job_id = submit_job(job)
            t_sub = time.perf_counter()
            final = wait_for_job(job_id, timeout=120)
            t1, t1_wall = time.perf_counter(), time.time()
            if final != "complete":
                failures += 1
            if measured:
                convoy_total.append(t1 - t0)
                ev = state_events(client, job_id)
                ph = phase_events(client, job_id)
                prov, clean, done = first(ev, "provision"), first(ev, "cleanup"), first(ev, "complete")
                rows["submit"].append(t_sub - t0)
                rows["to_provision"].append(prov - t0_wall)
                rows["provision_state"].append(clean - prov)
                if ("provision", "end") in ph:
                    rows["provision_phase"].append(ph[("provision", "end")] - ph[("provision", "start")])
                # the emulated connector logs "... checking SSH ..." then "... is ready" (stream-id times)
                ssh_from = output_event_time(client, job_id, "provision", "checking SSH")
                ssh_to = output_event_time(client, job_id, "provision", " is ready")
                if ssh_from and ssh_to:
                    rows["ssh_check"].append(ssh_to - ssh_from)
                if ("test", "end") in ph:
                    rows["test_phase"].append(ph[("test", "end")] - ph[("test", "start")])
                rows["cleanup_state"].append(done - clean)
                rows["notify"].append(t1_wall - done)
            time.sleep(args.idle)
            # --- bare Celery --------------------------------------------------------
            t0 = time.perf_counter()
            peer_celery.noop.apply_async(queue="peer-1").get(timeout=30)
            t1 = time.perf_counter()
            if measured:
                bare_total.append(t1 - t0)
            time.sleep(0.05)
            if (i + 1) % 10 == 0:
                log(f"  {i + 1}/{total_iters}")

        b2b_total, b2b_to_prov = [], []
        for i in range(args.back_to_back):
            t0_wall, t0 = time.time(), time.perf_counter()
            job_id = submit_job(job)
            wait_for_job(job_id, timeout=120)
            b2b_total.append(time.perf_counter() - t0)
            b2b_to_prov.append(first(state_events(client, job_id), "provision") - t0_wall)

        c, b = summary(convoy_total), summary(bare_total)
        what = f"test_cmds: {args.test_cmds!r}" if args.test_cmds is not None else "no test_cmds"
        print(f"\n== task_overhead: no-op single-device job vs bare Celery round trip ({machine_line()})")
        print(f"   convoy job: {{'job_queue': '{QUEUE}'}} ({what}), 1 emulated device; "
              f"bare: peer.noop.apply_async(queue='peer-1').get(), 1 worker -P threads -c 1; "
              f"same Redis server (db 0 / db 2); interleaved; {args.warmup} warm-up discarded; "
              f"device idle >= {args.idle:g}s before each convoy job\n")
        print(table(["figure", "n", "p50 ms", "p95 ms", "max ms", "mean ms"], [
            ["convoy: submit_job() -> wait_for_job() returns", c["n"], fmt_ms(c["p50"]), fmt_ms(c["p95"]),
             fmt_ms(c["max"]), fmt_ms(c["mean"])],
            ["bare Celery: noop.delay().get()", b["n"], fmt_ms(b["p50"]), fmt_ms(b["p95"]), fmt_ms(b["max"]),
             fmt_ms(b["mean"])],
            ["ratio convoy / bare", "", f"{c['p50'] / b['p50']:.1f}x", f"{c['p95'] / b['p95']:.1f}x", "", ""],
        ]))
        p = summary(ping)
        print(f"\n  (Redis PING round trip from this process: p50 {fmt_ms(p['p50'])} ms, p95 {fmt_ms(p['p95'])} ms)")
        if failures:
            print(f"  !! {failures} convoy job(s) did not end 'complete'")

        print("\n  where convoy's time goes (state events' ts = Redis clock; phase times from stream ids, 1 ms "
              "resolution):")
        labels = [
            ("submit", "submit_job() call (validate, store, dispatch lock, publish)"),
            ("to_provision", "submit -> 'provision' state (queue hop, worker picks up, job loaded)"),
            ("provision_state", "'provision' -> 'cleanup' state (provision phase [+ test])"),
            ("provision_phase", "  of which provision phase (emulated: reset home + SSH check)"),
            ("ssh_check", "    of which the SSH reachability check (paramiko: connect, auth, 'true')"),
            ("test_phase", "  of which test phase"),
            ("cleanup_state", "'cleanup' -> 'complete' (cleanup phase, release, finish)"),
            ("notify", "'complete' -> wait_for_job() returned"),
        ]
        out_rows = []
        for key, label in labels:
            s = summary(rows[key])
            if s["n"]:
                out_rows.append([label, fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["max"])])
        print(table(["segment", "p50 ms", "p95 ms", "max ms"], out_rows))
        if b2b_total:
            t, p = summary(b2b_total), summary(b2b_to_prov)
            print(f"\n  back to back (next job submitted as soon as wait_for_job returned, n={t['n']}): "
                  f"submit -> complete p50 {fmt_ms(t['p50'])} / p95 {fmt_ms(t['p95'])} ms, of which "
                  f"submit -> 'provision' p50 {fmt_ms(p['p50'])} / p95 {fmt_ms(p['p95'])} ms")
        if args.keep:
            print(f"\n  logs: {scratch}")
        return 0
    finally:
        teardown(cluster=cluster, peers=peers, scratch=scratch, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
