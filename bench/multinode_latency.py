#!/usr/bin/env python3
"""MultiNode latency: convoy's Redis store, its relay and the ``lava-*`` commands next to LAVA's coordinator.

Measures, in one run on this machine:

* ``lava-send`` -> waiting ``lava-wait`` returns (one way), in-process (a thread
  blocked in its job's relay, ``MultiNodeRelay.call``, as the device's test
  shell calls it) and with a real ``lava-wait`` process asking its job's relay
  over the job's unix socket (send -> the process has exited);
* ``lava-sync`` release latency (last member's call -> every member's call has
  returned) for N = 2, 8, 32, 256: in-process (one thread and one relay per
  member; one id reused in a loop, i.e. the generation barrier), and with N-1
  real ``lava-sync`` processes (each through its member's relay socket)
  already waiting for N = 2, 8, 32;
* the cost of one command process (``lava-send`` start -> exit) next to a bare
  interpreter of the same venv, and the import cost of the commands module;
* one send releasing W waiters at once, and Redis memory per waiter;
* the device side, through the LAVA test shell on emulated (sandboxed) devices
  (``devices_shell.py``: a farm of 32 devices provisioned by the ``emulated``
  connector, one real ``ssh -T`` session per member driven by the worker's own
  test-shell code and relay, a process per member): ``lava-send`` -> a waiting
  ``lava-wait`` returns (one way), ``lava-sync`` release for N = 2, 8, 32, and
  what one helper call and one fork+exec cost on the device; times are read
  from the definitions' output (bash ``$EPOCHREALTIME``, the host's clock);
* LAVA's real coordinator (Debian ``lava-coordinator``, driven by the harness in
  ``shared/bench/lava``) on the same figures, if it is installed.

    .venv/bin/python bench/multinode_latency.py            # full run (~7 minutes on 2 vCPUs)
    QUICK=1 .venv/bin/python bench/multinode_latency.py    # ~2 minutes

The device side needs root for sandboxed devices (else they run unsandboxed, which it says).
Env: ``LAVA_BENCH_DIR`` (default ``../shared/bench/lava`` beside the repo), ``JSON=file``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import redis

from convoy.coordinator.state import keys
from convoy.coordinator.multinode import cachefile, store
from convoy.coordinator.multinode import group as mn_group
from convoy.tasks.run.relay import MultiNodeRelay, RelayServer
from convoy.workers.embedded.redis_server import RedisServer, free_port

import devices_shell

QUICK = os.environ.get("QUICK", "") not in ("", "0")
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
LAVA_DIR = Path(os.environ.get("LAVA_BENCH_DIR", REPO.parent / "shared" / "bench" / "lava"))
RESULTS: dict[str, dict] = {}
#: members per hosting process (threads); at least one process per CPU
PER_HOST = int(os.environ.get("PER_HOST", "128"))


#: waiters per hosting process in the fan-out figure (hundreds of threads per interpreter
#: would measure the GIL convoy of the benchmark itself)
FANOUT_PER_HOST = int(os.environ.get("FANOUT_PER_HOST", "100"))


def hosts_for(n: int) -> int:
    """Processes hosting n in-process members: one per CPU, more so none holds over PER_HOST threads."""
    return min(n, max(os.cpu_count() or 2, -(-n // PER_HOST)))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(seconds: list[float]) -> dict:
    ms = [x * 1000 for x in seconds]
    return {"n": len(ms), "p50_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95), "max_ms": max(ms)}


def show(name: str, s: dict, note: str = "") -> dict:
    RESULTS[name] = s
    print(f"  {name:<46} p50 {s['p50_ms']:9.3f}  p95 {s['p95_ms']:9.3f}  max {s['max_ms']:9.3f} ms"
          f"  (n={s['n']}){'  ' + note if note else ''}", flush=True)
    return s


def wait_until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("bench: condition not reached")
        time.sleep(0.0005)


def relay(client: redis.Redis, gid: str, job: str) -> MultiNodeRelay:
    return MultiNodeRelay(client, group_id=gid, job_id=job, role="peer", timeout=None, cancel=None)


class Bench:
    def __init__(self, url: str, tmp: str) -> None:
        self.url = url
        self.admin = redis.Redis.from_url(url, decode_responses=True)
        self.tmp = tmp
        #: each member's relay served on its socket, as its worker would (made on first use)
        self.servers: dict[tuple[str, str], RelayServer] = {}

    def socket(self, gid: str, job: str) -> str:
        if (gid, job) not in self.servers:
            server = relay(self.admin, gid, job).serve(Path(self.tmp) / "jobs" / f"{gid}-{job}" / "relay.sock")
            server.start()
            self.servers[(gid, job)] = server
        return str(self.servers[(gid, job)].path)

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()

    def group(self, n: int, timeout: float = 120.0) -> tuple[str, list[str]]:
        gid = f"bench-{uuid.uuid4().hex[:8]}"
        jobs = [str(100000 + i) for i in range(n)]
        mn_group.create_group(self.admin, gid, {j: "peer" for j in jobs}, timeout=timeout)
        return gid, jobs

    def subscribers(self, gid: str) -> int:
        return int(self.admin.pubsub_numsub(keys.group_channel(gid))[0][1])

    def env(self, gid: str, job: str, tmp: str, compiled: bool = True) -> dict[str, str]:
        """A member's command environment; ``compiled``: byte-code cached, as after a pip install."""
        env = dict(os.environ, CONVOY_MULTINODE_SOCKET=self.socket(gid, job), CONVOY_GROUP_ID=gid,
                   CONVOY_JOB_ID=job, CONVOY_ROLE="peer", CONVOY_MULTINODE_CACHE=f"{tmp}/cache-{job}.txt")
        if compiled:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"  # never writes into the repository
        return env

    # -- send -> wait ----------------------------------------------------------
    def send_wait_inprocess(self, iters: int, tmp: str) -> dict:
        gid, (a, b) = self.group(2)
        got: dict[int, float] = {}
        ready = threading.Event()

        def waiter(i: int, mine: MultiNodeRelay) -> None:
            ready.set()  # as the test shell: the relay's call, then the cache file
            reply = mine.call("lava-wait", [f"ping-{i}"])
            if reply.code != 0 or reply.cache is None:
                raise RuntimeError(reply.stderr)
            cachefile.write(f"{tmp}/cache-{b}.txt", reply.cache)
            got[i] = time.perf_counter()

        conn_w, sender = relay(self.admin, gid, b), relay(self.admin, gid, a)
        lat = []
        for i in range(iters):
            ready.clear()
            t = threading.Thread(target=waiter, args=(i, conn_w))
            t.start()
            wait_until(lambda: self.subscribers(gid) == 1)
            time.sleep(random.uniform(0, 0.001))
            t0 = time.perf_counter()
            sender.call("lava-send", [f"ping-{i}", f"seq={i}"])
            t.join()
            lat.append(got[i] - t0)
        return summary(lat)

    def send_wait_process(self, iters: int, tmp: str) -> dict:
        gid, (a, b) = self.group(2)
        sender = relay(self.admin, gid, a)
        lat = []
        for i in range(iters):
            proc = subprocess.Popen([str(BIN / "lava-wait"), f"ping-{i}"], env=self.env(gid, b, tmp))
            wait_until(lambda: self.subscribers(gid) == 1)
            if i == 0:
                RESULTS["waiter_rss_kib"] = _rss_kib(proc.pid)
            t0 = time.perf_counter()
            sender.call("lava-send", [f"ping-{i}", f"seq={i}"])
            if proc.wait() != 0:
                raise RuntimeError("lava-wait failed")
            lat.append(time.perf_counter() - t0)
        return summary(lat)

    # -- sync ------------------------------------------------------------------
    def sync_inprocess(self, n: int, iters: int, tmp: str, spread: float | None = None) -> dict:
        """Members are threads, a relay each (one Redis client per process), spread over a few processes.

        Members arrive at random within ``spread`` (default 10 ms + 0.2 ms per
        member: real members arrive seconds apart; a zero spread would measure
        a herd of N simultaneous arrivals, not the release).

        Not all in one interpreter: N threads there would measure the GIL
        handing itself to N woken threads, not the barrier (in a real group
        every member is its own process on its own host)."""
        gid, jobs = self.group(n)
        spread = 0.010 + 0.0002 * n if spread is None else spread
        ctx = mp.get_context("fork")
        enter, leave = ctx.Array("d", n, lock=False), ctx.Array("d", n, lock=False)
        start, done = ctx.Barrier(n + 1), ctx.Barrier(n + 1)
        failures = ctx.Queue()
        count = hosts_for(n)
        hosts = [ctx.Process(target=_sync_host, daemon=True,
                             args=(self.url, gid, jobs, list(range(h, n, count)), iters, tmp, spread,
                                   enter, leave, start, done, failures))
                 for h in range(count)]
        for p in hosts:
            p.start()
        lat = []
        try:
            for _ in range(iters):
                start.wait(120)
                done.wait(120)
                if not failures.empty():
                    raise RuntimeError(failures.get())
                lat.append(max(leave) - max(enter))
        finally:
            for p in hosts:
                p.join(30)
                if p.is_alive():
                    p.kill()
        return summary(lat)

    def sync_process(self, n: int, iters: int, tmp: str) -> dict:
        gid, jobs = self.group(n)
        last = relay(self.admin, gid, jobs[0])
        sync_key = keys.group_sync(gid, "loop")
        lat = []
        for it in range(1, iters + 1):
            procs = [subprocess.Popen([str(BIN / "lava-sync"), "loop"], env=self.env(gid, j, tmp))
                     for j in jobs[1:]]
            field = f"g:{it}"  # the generation this round fills
            wait_until(lambda f=field: int(self.admin.hget(sync_key, f) or 0) == n - 1
                       and self.subscribers(gid) == n - 1, 120)
            exits: list[float] = []
            waiters = [threading.Thread(target=lambda p=p, e=exits: (p.wait(), e.append(time.perf_counter())))
                       for p in procs]
            for w in waiters:
                w.start()
            t0 = time.perf_counter()
            if last.call("lava-sync", ["loop"]).code != 0:  # the last member arrives
                raise RuntimeError("lava-sync failed")
            mine = time.perf_counter()
            for w in waiters:
                w.join()
            if any(p.returncode for p in procs):
                raise RuntimeError("lava-sync failed")
            lat.append(max(exits + [mine]) - t0)
        return summary(lat)

    # -- fan-out to many waiters -------------------------------------------------
    def fanout(self, waiters: int) -> dict:
        """W waiters (threads in one process per CPU, a subscription each) on one message; one send."""
        gid, (a, _) = self.group(2)
        before = self._used_memory()
        ctx = mp.get_context("fork")
        released = ctx.Array("d", waiters, lock=False)
        count = max(os.cpu_count() or 2, -(-waiters // FANOUT_PER_HOST))
        hosts = [ctx.Process(target=_fanout_host, args=(self.url, gid, list(range(h, waiters, count)), released),
                             daemon=True) for h in range(count)]
        for p in hosts:
            p.start()
        wait_until(lambda: self.subscribers(gid) == waiters, 120)
        during = self._used_memory()
        t0 = time.perf_counter()
        store.send(self.admin, gid, a, "go")
        for p in hosts:
            p.join(120)
        if any(p.exitcode for p in hosts) or not all(released):
            raise RuntimeError("a fan-out waiter failed")
        return {"waiters": waiters, "release_all_ms": (max(released) - t0) * 1000,
                "redis_bytes_per_waiter": (during - before) / waiters}

    def _used_memory(self) -> int:
        return int(self.admin.info("memory")["used_memory"])


def _fanout_host(url: str, gid: str, mine: list[int], released) -> None:
    """A forked process whose threads each wait (own connection) for one message."""

    client = redis.Redis.from_url(url, max_connections=len(mine) + 8)

    def waiter(k: int) -> None:
        store.wait_any(client, gid, "go", timeout=120)
        released[k] = time.perf_counter()

    threading.stack_size(256 * 1024)
    threads = [threading.Thread(target=waiter, args=(k,)) for k in mine]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))


def _sync_host(url, gid, jobs, mine, iters, tmp, spread, enter, leave, start, done, failures) -> None:
    """A forked process hosting some members of a sync benchmark, a thread each."""

    client = redis.Redis.from_url(url)  # one per process, as a worker holds one

    def member(k: int) -> None:
        mine = relay(client, gid, jobs[k])
        rng = random.Random(k)
        for _ in range(iters):
            start.wait(120)
            try:
                time.sleep(rng.uniform(0, spread))
                enter[k] = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
                # what a call does: one id reused every round, pass record, cache file
                reply = mine.call("lava-sync", ["loop"])
                if reply.code != 0:
                    raise RuntimeError(reply.stderr)
                cachefile.write(f"{tmp}/cache-{k}.txt", reply.cache or [])
                leave[k] = time.perf_counter()
            except BaseException as exc:  # noqa: BLE001 - reported by the parent
                failures.put(repr(exc))
            done.wait(120)

    threading.stack_size(256 * 1024)
    threads = [threading.Thread(target=member, args=(k,)) for k in mine]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- process cost ---------------------------------------------------------------
def process_cost(bench: Bench, runs: int, tmp: str) -> None:
    gid, (a, _) = bench.group(2)
    compiled, as_is = bench.env(gid, a, tmp), bench.env(gid, a, tmp, compiled=False)
    send = [str(BIN / "lava-send"), "ping", "k=v"]
    subprocess.run(send, env=compiled, check=True)  # fills the byte-code cache
    nobc = "PYTHONDONTWRITEBYTECODE" in os.environ
    cmds = {"lava-send (console script)": (send, compiled),
            "lava-send (no byte-code cache)": (send, as_is),
            "python -c pass (same venv: the floor)": ([sys.executable, "-c", "pass"], compiled),
            "python -S -c pass (no site, no .pth)": ([sys.executable, "-S", "-c", "pass"], compiled)}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(runs):  # interleaved, so machine noise hits every row alike
        for name, (cmd, env) in cmds.items():
            t0 = time.perf_counter()
            if subprocess.run(cmd, env=env, check=False).returncode != 0:
                raise RuntimeError(f"{name} failed")
            times[name].append(time.perf_counter() - t0)
    notes = {"lava-send (console script)": "byte-compiled, as after pip install",
             "lava-send (no byte-code cache)": "compiles convoy from source every run"
                                               + (" (PYTHONDONTWRITEBYTECODE=1 here)" if nobc else "")}
    for name, xs in times.items():
        show(name, summary(xs), notes.get(name, ""))
    best: dict[str, float] = {}
    for _ in range(5):  # least-disturbed of a few runs
        out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                              "import convoy.coordinator.multinode.commands"],
                             capture_output=True, text=True, env=compiled, check=False).stderr
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                name, value = parts[2].strip(), int(parts[1]) / 1000
                best[name] = min(best.get(name, value), value)
    mine = best.get("convoy.coordinator.multinode.commands", float("nan"))
    pkg = best.get("convoy", float("nan"))
    RESULTS["import"] = {"commands_ms": mine, "convoy_package_ms": pkg, "site_ms": best.get("site")}
    print(f"  python -X importtime (byte-compiled, best of 5): commands module {mine:.1f} ms cumulative, "
          f"of which `import convoy` (package __init__: typing; errors: dataclasses) {pkg:.1f} ms; "
          f"before it, `site` {best.get('site', 0):.1f} ms (editable-install finder); redis-py is never imported "
          "(the command asks its job's relay over a unix socket)")


# --- device side: the LAVA test shell on emulated devices ---------------------------
#: first rounds of every device-side session left out (sessions start seconds apart)
DEVICE_WARMUP = 3


def _failed(runs: list[devices_shell.MemberRun]) -> None:
    for run in runs:
        if run.status != 0:
            raise RuntimeError(f"device-side member {run.job_id} ended with {run.status}: {run.output[-800:]}")


def device_sync(shells: devices_shell.DeviceShells, url: str, n: int, rounds: int,
                spread: float | None = None) -> dict:
    """Release latency per round = max(after) - max(before): the last member's call -> every member's returned.

    Each member waits a random time in [0, ``spread``) (default 10 ms + 0.2 ms x N, the host side's)
    before it takes its time and calls ``lava-sync loop``."""
    spread_us = int((0.010 + 0.0002 * n if spread is None else spread) * 1e6)
    runs = shells.run(url, [devices_shell.sync_steps(rounds + DEVICE_WARMUP, spread_us)] * n)
    _failed(runs)
    times = [devices_shell.timestamps(run, "sync") for run in runs]
    lat = [max(t[i][1] for t in times) - max(t[i][0] for t in times)
           for i in range(DEVICE_WARMUP + 1, rounds + DEVICE_WARMUP + 1)]
    return summary(lat)


def device_send_wait(shells: devices_shell.DeviceShells, url: str, rounds: int) -> dict:
    """One way: the sender's time right before ``lava-send m<i>`` -> the waiter's right after ``lava-wait`` returned.

    Both first pass ``lava-sync r``; the sender then pauses 50-60 ms so that the waiter is waiting
    (checked: the gap between the waiter's call and the send is printed)."""
    waiter, sender = shells.run(url, [devices_shell.wait_steps(rounds + DEVICE_WARMUP),
                                      devices_shell.send_steps(rounds + DEVICE_WARMUP)])
    _failed([waiter, sender])
    got, sent = devices_shell.timestamps(waiter, "recv"), devices_shell.timestamps(sender, "send")
    picked = range(DEVICE_WARMUP + 1, rounds + DEVICE_WARMUP + 1)
    lat = [got[i][1] - sent[i][0] for i in picked]
    gaps = [sent[i][0] - got[i][0] for i in picked]  # the waiter's lava-wait started this long before the send
    s = summary(lat)
    s["min_wait_head_start_ms"] = min(gaps) * 1000
    return s


def device_costs(shells: devices_shell.DeviceShells, url: str, rounds: int) -> tuple[dict, dict]:
    """On one device, in its session: one ``lava-self`` (helper + relay + reply) and one fork+exec of ``true``."""
    steps = [f"bash -c 'for i in $(seq 1 {rounds + DEVICE_WARMUP}); do b=$EPOCHREALTIME; lava-self >/dev/null || exit 1; "
             "m=$EPOCHREALTIME; /bin/true; a=$EPOCHREALTIME; echo \"MNB cost $i $b $m $a\"; done'"]
    (run,) = shells.run(url, [steps])
    _failed([run])
    t = devices_shell.timestamps(run, "cost")
    picked = range(DEVICE_WARMUP + 1, rounds + DEVICE_WARMUP + 1)
    return summary([t[i][1] - t[i][0] for i in picked]), summary([t[i][2] - t[i][1] for i in picked])


def device_side(url: str, tmp: str, q: bool) -> None:
    print("\n== convoy: device side, through the LAVA test shell on emulated devices ==")
    sizes = ((2, 60 if q else 300), (8, 60 if q else 200), (32, 50 if q else 100))
    t0 = time.perf_counter()
    shells = devices_shell.DeviceShells(max(n for n, _ in sizes), Path(tmp) / "devices").start()
    try:
        print(f"  {len(shells.devices)} emulated devices, "
              + ("sandboxed (own network, mount, pid namespaces on a lab bridge)" if shells.sandboxed else
                 "NOT sandboxed here (commands run on the host)")
              + f", provisioned in {time.perf_counter() - t0:.1f} s; one ssh -T session per member, its "
              "driver and MultiNodeRelay in a process of its own; first "
              f"{DEVICE_WARMUP} rounds of each session left out", flush=True)
        RESULTS["device_sandboxed"] = shells.sandboxed
        helper, fork = device_costs(shells, url, 50 if q else 200)
        show("device: one lava-self call", helper, "helper on the device -> relay -> reply read (no wait)")
        show("device: one fork+exec of /bin/true", fork, "the device's process cost (the helpers fork ~10)")
        s = show("device send->wait", device_send_wait(shells, url, 60 if q else 200),
                 "time before lava-send -> time after lava-wait, two devices")
        print(f"    (the waiter's lava-wait started at least {s['min_wait_head_start_ms']:.1f} ms before each send)")
        for n, rounds in sizes:
            show(f"device sync N={n}", device_sync(shells, url, n, rounds),
                 f"{n} devices, one id reused; max(after) - max(before)")
        # 32 devices on this machine's 2 CPUs: each helper call costs ~10 ms of CPU on the device, so 32 arrivals
        # within 16 ms queue for the CPUs; spread over 0.5 s they do not (each device has its own CPU in a lab)
        show("device sync N=32, arrivals over 0.5 s", device_sync(shells, url, 32, 30 if q else 60, spread=0.5),
             "as above, members arrive within 0.5 s")
    finally:
        shells.stop()


# --- LAVA -----------------------------------------------------------------------
def lava_available() -> str | None:
    if not (LAVA_DIR / "bench_coordinator.py").is_file():
        return f"harness not found at {LAVA_DIR} (set LAVA_BENCH_DIR)"
    r = subprocess.run(["/usr/bin/python3", "-c", "import lava.coordinator"], capture_output=True, check=False)
    if r.returncode != 0:
        return ("Debian package lava-coordinator is not installed (see shared/bench/lava/README.md: "
                "apt-get install --no-install-recommends lava-coordinator, with policy-rc.d)")
    return None


def run_lava(plan: list[tuple[float, int, list[tuple[int, int]]]], work: str) -> None:
    sys.path.insert(0, str(LAVA_DIR))
    import bench_coordinator as bc

    port = free_port()
    conf = Path(work) / "coordinator.conf"
    conf.write_text(json.dumps({"port": port, "blocksize": 4096, "poll_delay": 3,
                                "coordinator_hostname": "127.0.0.1"}))
    log = open(Path(work) / "coordinator.out", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["/usr/bin/python3", str(LAVA_DIR / "coordinator_loopback.py"), "--config", str(conf),
                             "--logfile", str(Path(work) / "coordinator.log"), "--loglevel", "DEBUG"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        import socket

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return proc.poll() is not None

        wait_until(listening, 20)
        if proc.poll() is not None:
            raise RuntimeError("lava-coordinator did not start: " + (Path(work) / "coordinator.out").read_text())
        for poll, rt_iters, syncs in plan:
            a = SimpleNamespace(host="127.0.0.1", port=port, poll_delay=poll, timeout=600.0, spread=None, seed=1)
            random.seed(1)
            if rt_iters:
                a.iters = rt_iters
                r = bc.bench_roundtrip(a)
                show(f"LAVA send->wait one-way, poll {poll:g}s", r["oneway_send_to_wait"])
            for nodes, iters in syncs:
                a.nodes, a.iters = nodes, iters
                r = bc.bench_sync(a)
                show(f"LAVA sync N={nodes}, poll {poll:g}s", r["barrier_last_release"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --- report -----------------------------------------------------------------------
def verdicts(lava_polls: list[float]) -> None:
    """One table: convoy host side (in-process and real processes), device side, LAVA at each poll, targets."""
    print("\n== summary: p50 ms (targets from DESIGN.md; ratio = LAVA p50 / convoy in-process p50) ==")
    rows = [("send -> wait, one way", "convoy send->wait (in-process)", "convoy send->wait (lava-wait process)",
             "device send->wait", "LAVA send->wait one-way", 2.0)]
    for n, target in ((2, 2.0), (8, None), (32, 5.0), (256, 50.0)):
        rows.append((f"lava-sync release N={n}", f"convoy sync N={n} (in-process)",
                     f"convoy sync N={n} (processes)", f"device sync N={n}", f"LAVA sync N={n}", target))
    head = f"  {'figure':<24} {'convoy':>9} {'processes':>10} {'device':>8}" + "".join(
        f" {'LAVA@' + format(p, 'g') + 's':>11}" for p in lava_polls) + f" {'target':>8}  verdict  ratio"
    print(head)
    for label, ours, procs, device, theirs, target in rows:
        mine = RESULTS.get(ours)
        if not mine:
            continue
        line = f"  {label:<24} {mine['p50_ms']:9.3f} "
        line += f"{RESULTS[procs]['p50_ms']:10.1f}" if procs in RESULTS else f"{'-':>10}"
        line += f" {RESULTS[device]['p50_ms']:8.1f}" if device in RESULTS else f" {'-':>8}"
        ratios = []
        for poll in lava_polls:
            lava = RESULTS.get(f"{theirs}, poll {poll:g}s")
            line += f" {lava['p50_ms']:11.1f}" if lava else f" {'-':>11}"
            if lava:
                ratios.append(f"{lava['p50_ms'] / mine['p50_ms']:,.0f}x@{poll:g}s")
        verdict = "-" if target is None else ("MET" if mine["p50_ms"] <= target else "MISSED")
        line += f" {('<= ' + format(target, 'g')) if target else '':>8}  {verdict:<7}  {' '.join(ratios)}"
        print(line)
    cost = RESULTS.get("lava-send (console script)")
    if cost:
        floor = RESULTS.get("python -c pass (same venv: the floor)", {}).get("p50_ms", float("nan"))
        print(f"  {'lava-send process':<24} {cost['p50_ms']:9.1f} {'':>10} {'':>8}" + " " * (12 * len(lava_polls))
              + f" {'<= 60':>8}  {'MET' if cost['p50_ms'] <= 60 else 'MISSED':<7}  "
              f"(bare interpreter of this venv: {floor:.1f} ms)")
    device_verdict()


def device_verdict() -> None:
    """The device side against its target: p50 at least 10x faster than LAVA at its 0.1 s poll floor.

    That is p50 <= 10 ms (0.1 s / 10; DESIGN.md: send -> wait through the test shell <= 10 ms), and
    where LAVA ran in this run, at least 10x its measured p50 at poll 0.1 s for the same figure."""
    rows = [("send -> wait, one way", "device send->wait", "LAVA send->wait one-way, poll 0.1s")]
    rows += [(f"lava-sync release N={n}", f"device sync N={n}", f"LAVA sync N={n}, poll 0.1s") for n in (2, 8, 32)]
    print("\n== device side (LAVA test shell on emulated devices): target p50 <= 10 ms (= LAVA's 0.1 s poll "
          "floor / 10) and >= 10x faster than LAVA at poll 0.1 s, same run ==")
    print(f"  {'figure':<24} {'device p50':>10} {'p95':>8} {'LAVA@0.1s p50':>14} {'LAVA/device':>12}  verdict")
    verdicts_seen = []
    for label, mine_key, lava_key in rows:
        mine, lava = RESULTS.get(mine_key), RESULTS.get(lava_key)
        if not mine:
            continue
        ratio = lava["p50_ms"] / mine["p50_ms"] if lava else None
        met = mine["p50_ms"] <= 10.0 and (ratio is None or ratio >= 10.0)
        verdicts_seen.append(met)
        print(f"  {label:<24} {mine['p50_ms']:10.1f} {mine['p95_ms']:8.1f} "
              f"{(format(lava['p50_ms'], '14.1f') if lava else format('-', '>14'))} "
              f"{(format(ratio, '11.1f') + 'x' if ratio else format('-', '>12'))}  {'MET' if met else 'MISSED'}")
    if verdicts_seen:
        print(f"  device-side target: {'MET' if all(verdicts_seen) else 'MISSED'} "
              f"({sum(verdicts_seen)} of {len(verdicts_seen)} rows)")


def main() -> int:
    random.seed(2)
    q = QUICK
    print(f"# multinode latency {'(QUICK)' if q else '(full)'} on {os.cpu_count()} CPU(s), "
          f"python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="convoy-mnbench-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        bench = Bench(server.url, tmp)
        try:
            print(f"# private redis-server at {server.url}\n\n== convoy: one command process ==")
            process_cost(bench, 15 if q else 60, tmp)

            print("\n== convoy: lava-send -> lava-wait (one way) ==")
            show("convoy send->wait (in-process)", bench.send_wait_inprocess(200 if q else 1000, tmp),
                 "MultiNodeRelay.call in a thread (the test shell's path)")
            show("convoy send->wait (lava-wait process)", bench.send_wait_process(10 if q else 50, tmp),
                 "send -> the process (via its relay socket) has exited")

            print("\n== convoy: lava-sync release (last member's call -> every member returned) ==")
            for n, iters in ((2, 100 if q else 500), (8, 60 if q else 300), (32, 30 if q else 200),
                             (256, 6 if q else 50)):
                show(f"convoy sync N={n} (in-process)", bench.sync_inprocess(n, iters, tmp),
                     f"threads in {hosts_for(n)} processes, a relay each; one id reused")
            for n, iters in ((2, 8 if q else 30), (8, 4 if q else 20), (32, 2 if q else 8)):
                show(f"convoy sync N={n} (processes)", bench.sync_process(n, iters, tmp),
                     f"{n - 1} lava-sync processes waiting -> all exited")

            print("\n== convoy: one send releases many waiters ==")
            w = 200 if q else 1000
            f = bench.fanout(w)
            RESULTS["fanout"] = f
            print(f"  {w} waiters (threads, {FANOUT_PER_HOST} per process, a subscription each): all released "
                  f"{f['release_all_ms']:.1f} ms "
                  f"after one send; Redis memory {f['redis_bytes_per_waiter'] / 1024:.1f} KiB per waiting "
                  f"connection. A waiting lava-wait process: RSS {RESULTS.get('waiter_rss_kib', 0) / 1024:.1f} "
                  "MiB, one socket to its relay. Nothing shared (no coordinator process) grows per waiter.")
            device_side(server.url, tmp, q)
        finally:
            bench.close()
            server.stop()

        print("\n== LAVA coordinator (Debian lava-coordinator, same machine, same run) ==")
        reason = lava_available()
        lava_polls: list[float] = []
        if reason:
            print(f"  NOT MEASURED: {reason}")
        else:
            lava_polls = [0.1] if q else [0.1, 3.0]
            if q:
                plan = [(0.1, 10, [(2, 10), (8, 6), (32, 3)])]
            else:
                plan = [(3.0, 5, [(2, 5), (8, 5), (32, 5)]), (0.1, 100, [(2, 100), (8, 50), (32, 30)])]
            print("  (poll 3 s = Debian's shipped config; 0.1 s = the smallest the dispatcher accepts; "
                  "N=256 not run: listen(1) + polling would take minutes)")
            run_lava(plan, tmp)
        verdicts(lava_polls)
        print(f"# load average at the end {os.getloadavg()[0]:.2f} (other work on this machine inflates every row)")
    if os.environ.get("JSON"):
        with open(os.environ["JSON"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"quick": q, "time": time.time(), "results": RESULTS}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
