#!/usr/bin/env python3
"""What ``convoy server`` costs: a no-op job submitted through it next to ``submit_job()`` straight to Redis,
and how many ``GET /v1/result/<id>`` it answers per second under 50 concurrent clients.

One run, one machine, one embedded cluster (private Redis, one emulated device, the coordinator) and one
``convoy server`` process (uvicorn, one event loop, FastAPI's thread pool for the routes):

* **direct**: ``submit_job({"job_queue": "bench-1"})`` → ``wait_for_job`` with the lab's Redis URL;
* **server**: the same two calls with ``CONVOY_SERVER`` settings (a client's id and secret: the token is
  fetched once), so ``submit_job`` is a ``POST /api/v1/jobs`` and ``wait_for_job`` long-polls
  ``/api/v1/jobs/<id>/live``.

They are interleaved so that machine noise hits both alike; the first ``--warmup`` of each are discarded.
The server's cost is printed as the difference of the p50s (target: ≤ 5 ms), and for the submit call
alone.  Then ``--clients`` threads (default 50), each with its own keep-alive HTTP connection, read one
finished job's results through Testflinger's ``GET /v1/result/<id>`` for ``--seconds``; next to them, the
same threads reading ``job_results()`` straight from Redis (what the server does per request).  The load
generator shares the 2 vCPUs with the server: requests per second is a floor, not a ceiling.

    .venv/bin/python bench/server.py [--iterations 30] [--warmup 3] [--clients 50] [--seconds 10]
"""
from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ms, log, machine_line, scratch_dir, start_cluster, summary, table, teardown

QUEUE = "bench-1"
CONVOY = str(Path(sys.executable).parent / "convoy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(redis_url: str, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``convoy server`` on a free loopback port; its process and base URL once it answers."""
    port = free_port()
    env = {**os.environ, "CONVOY_REDIS_URL": redis_url}
    env.pop("CONVOY_SERVER", None)
    with (logs / "server.log").open("ab") as out:
        proc = subprocess.Popen([CONVOY, "server", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"convoy server exited: {(logs / 'server.log').read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return proc, base
        except OSError:
            time.sleep(0.1)  # not listening yet: the process is starting
    raise RuntimeError("convoy server did not answer within 60 s")


def under_load(clients: int, seconds: float, make_request: Callable[[], Callable[[], bool]]
               ) -> tuple[int, list[float], int]:
    """``clients`` threads, each repeating its own ``make_request()`` for ``seconds`` (all start together):
    (requests done, their latencies, failed ones)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        request = make_request()
        mine: list[float] = []
        bad = 0
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            bad += not request()
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    for thread in threads:
        thread.join()
    return len(latencies), latencies, errors[0]


def http_reader(port: int, path: str, headers: dict[str, str]) -> Callable[[], Callable[[], bool]]:
    """A client of GET ``path`` on a keep-alive connection of its own (reopened after an error)."""
    def make() -> Callable[[], bool]:
        conn = [http.client.HTTPConnection("127.0.0.1", port, timeout=30)]

        def get() -> bool:
            try:
                conn[0].request("GET", path, headers=headers)
                reply = conn[0].getresponse()
                reply.read()
                return reply.status == 200
            except OSError:
                conn[0].close()
                conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                return False
        return get
    return make


def redis_reader(job_id: str, settings: Any) -> Callable[[], Callable[[], bool]]:
    """A client reading ``job_results()`` straight from Redis (the server's own work per request)."""
    from convoy.coordinator.api import job_results

    def make() -> Callable[[], bool]:
        return lambda: bool(job_results(job_id, settings=settings))
    return make


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=30, help="measured jobs of each kind")
    ap.add_argument("--warmup", type=int, default=3, help="discarded first iterations")
    ap.add_argument("--clients", type=int, default=50, help="concurrent readers of GET /v1/result/<id>")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the readers run")
    ap.add_argument("--idle", type=float, default=0.2, help="seconds between jobs (the device's task ends "
                                                            "a few ms after the job's 'complete')")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = ap.parse_args(argv)

    scratch = scratch_dir("convoy-bench-server-")
    cluster = server = None
    try:
        cluster = start_cluster({QUEUE: 1}, scratch / "cluster")
        server, base = start_server(cluster.redis_url, scratch)
        from convoy.config.settings import load_settings
        from convoy.coordinator.api import submit_job, wait_for_job
        from convoy.coordinator.state.clients import Client, add_client

        direct = dataclasses.replace(load_settings(), redis_url=cluster.redis_url, server_url=None)
        secret = add_client(cluster.client(), Client("bench"))
        remote = dataclasses.replace(direct, server_url=base, client_id="bench", secret_key=secret,
                                     redis_url="redis://127.0.0.1:1/0")  # the server path never uses Redis
        job = {"job_queue": QUEUE}
        kinds = {"direct": direct, "server": remote}
        total: dict[str, list[float]] = {k: [] for k in kinds}
        submit: dict[str, list[float]] = {k: [] for k in kinds}
        failures = 0
        last_job = ""
        log(f"{args.warmup + args.iterations} iterations of each ({args.warmup} warm-up), job {job}")
        for i in range(args.warmup + args.iterations):
            for kind, settings in kinds.items():
                t0 = time.perf_counter()
                job_id = submit_job(job, settings=settings)
                t1 = time.perf_counter()
                state = wait_for_job(job_id, timeout=120, settings=settings)
                t2 = time.perf_counter()
                failures += state != "complete"
                if i >= args.warmup:
                    total[kind].append(t2 - t0)
                    submit[kind].append(t1 - t0)
                last_job = job_id
                time.sleep(args.idle)
            if (i + 1) % 10 == 0:
                log(f"  {i + 1}/{args.warmup + args.iterations}")

        port = int(base.rsplit(":", 1)[1])
        token_reply = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        token_reply.request("POST", "/v1/oauth2/token", body=json.dumps({"client_id": "bench", "secret_key": secret}),
                            headers={"Content-Type": "application/json"})
        token = json.loads(token_reply.getresponse().read())["access_token"]
        log(f"{args.clients} clients reading GET /v1/result/{last_job} for {args.seconds:g}s")
        n_http, lat_http, errors = under_load(args.clients, args.seconds, http_reader(
            port, f"/v1/result/{last_job}", {"Authorization": f"Bearer {token}"}))
        log(f"{args.clients} threads reading job_results() from Redis for {args.seconds:g}s")
        n_direct, lat_direct, direct_errors = under_load(args.clients, args.seconds, redis_reader(last_job, direct))

        d, s = summary(total["direct"]), summary(total["server"])
        ds, ss = summary(submit["direct"]), summary(submit["server"])
        print(f"\n== server: convoy server's cost ({machine_line()})")
        print(f"   job {job} on 1 emulated device; interleaved direct/server; {args.warmup} warm-up discarded; "
              f"server: one uvicorn process on loopback\n")
        print(table(["submit -> complete", "n", "p50 ms", "p95 ms", "max ms"], [
            ["submit_job() straight to Redis", d["n"], fmt_ms(d["p50"]), fmt_ms(d["p95"]), fmt_ms(d["max"])],
            ["through convoy server", s["n"], fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["max"])],
            ["server adds (p50 difference; target <= 5 ms)", "", fmt_ms(s["p50"] - d["p50"]),
             fmt_ms(s["p95"] - d["p95"]), ""],
            ["  submit_job() call alone, direct", ds["n"], fmt_ms(ds["p50"]), fmt_ms(ds["p95"]), fmt_ms(ds["max"])],
            ["  submit_job() call alone, through the server", ss["n"], fmt_ms(ss["p50"]), fmt_ms(ss["p95"]),
             fmt_ms(ss["max"])],
        ]))
        h, r = summary(lat_http), summary(lat_direct)
        print(f"\n  {args.clients} concurrent clients for {args.seconds:g}s (the load generator shares the CPUs):")
        print(table(["reader", "requests/s", "p50 ms", "p95 ms", "errors"], [
            ["GET /v1/result/<id> through convoy server", f"{n_http / args.seconds:,.0f}", fmt_ms(h["p50"]),
             fmt_ms(h["p95"]), str(errors)],
            ["job_results() straight from Redis (peer)", f"{n_direct / args.seconds:,.0f}", fmt_ms(r["p50"]),
             fmt_ms(r["p95"]), str(direct_errors)],
        ]))
        if failures:
            print(f"  !! {failures} job(s) did not end 'complete'")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        teardown(cluster=cluster, peers=None, scratch=scratch, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
