"""Crash recovery: kill -9 one process in each phase of a multi job; the coordinator with many reservations open.

**Kills** (``--runs N``, default 3; ``--no-kills`` skips them): a lab of real processes
(``convoy.workers.embedded.lab.Lab``: one ``convoy coordinator --concurrency 2``, one ``convoy
worker`` serving two emulated devices with ``provision_delay`` and ``cleanup_delay`` 1.5 s, so that
provision and cleanup can be hit) on a private Redis, default lease and heartbeat settings, and a
loopback key server for ``gh:alice``.  Each run submits the fault table's two-device multi job
(``tests/faults/test_fault_table.py``), waits for the phase, SIGKILLs one process by pid and
measures the time from the kill to every device idle again (``Lab.wait_idle``: idle, in service,
alive).  Rows, the process killed:

* the coordinator's Celery worker (its ``convoy coordinator`` supervisor restarts it);
* the Celery worker of the second child's device (``convoy worker`` restarts it);
* ``convoy worker`` itself (its device workers die with it); the host is started again right after
  the kill, as a service manager would, and the time includes that restart.

Columns, where the kill lands: *provision* (the second child provisioning), *reserve* (the parent
holds a 600 s reservation), *parent test* (the parent's test_cmds run), *child test* (both
children's test_cmds run), *cleanup* (the parent's cleanup for the coordinator row, the second
child's for the others).  Every test command waits for a go-file, bounded at 120 s, and the bench
touches it right after the kill; a reservation is released (``release_reservation``, what
``convoy release`` calls) right after the kill.  So the time is the recovery plus the job's own end
(its devices' cleanup, 1.5 s).  Runs are interleaved (run, phase, fault), so one process is
never killed twice in a row.  Printed: p50 / max per cell and p50 over all cells next to the
target (p50 <= 10 s); then kill -> the job's final state (Redis clock) and how the jobs ended.

**Reservations open** (``--sizes``, default 1,100,1000; ``--no-reservations`` skips them): on a
fresh Redis database, N parents in state ``reserve`` (a far deadline in the timer set), each with
2 children ``allocated`` on 2 registered simulated devices (registry entries, no worker processes:
this process holds each device's worker lease and alive mark and renews them every 4 s), written
with convoy's own state functions.  Then one real ``convoy coordinator --concurrency 2`` is
started; after its alive mark and 12 s (two scheduler passes at least) the bench reads its Celery
worker process's thread count and TCP connections to the Redis port (psutil), its CPU time and
the Redis commands it sent over the next 10 s (``INFO commandstats`` minus this process's own; passes
counted by ``ZRANGEBYSCORE`` of the timer set, which only a pass sends),
and then the wall time of its scheduler passes by ``MONITOR`` for 11 s (first command of a pass,
``ZRANGEBYSCORE`` of the timer set, to the ``ZRANGE`` that precedes its sleep; MONITOR itself
slows Redis a little).  Target: threads and connections flat in N.

    .venv/bin/python bench/recovery.py [--runs 3] [--sizes 1,100,1000] [--no-kills] [--no-reservations] [--keep]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import redis

from common import first, log, machine_line, pct, scratch_dir, state_events, table
from convoy.config.devices import DeviceConfig
from convoy.config.lifecycle import FINAL_STATES, JobState
from convoy.config.steps import ParentStep
from convoy.coordinator.state.connection import make_client
from convoy.coordinator.state.devices import claim_device, register
from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.leases import DeviceLock
from convoy.coordinator.state.presence import AliveMark, missing
from convoy.coordinator.state.timers import Timer, set_timer
from convoy.errors import ConvoyError, redact_url
from convoy.workers.embedded.cluster import emulated_devices
from convoy.workers.embedded.lab import CONVOY, Lab, wait_until
from convoy.workers.embedded.redis_server import RedisServer

TARGET_S = 10.0
DELAY_S = 1.5
STAGE_TIMEOUT = 120.0
IDLE_TIMEOUT = 300.0
#: a test command that waits (bounded) for the bench's go-file in its own job directory, as in the fault table
WAIT_FOR = "for i in $(seq 1200); do [ -e go ] && exit 0; sleep 0.1; done; exit 9"
COORDINATOR, DEVICE, SUPERVISOR = "coordinator", "device worker", "worker supervisor"
FAULTS = {COORDINATOR: "coordinator's Celery worker", DEVICE: "a busy device's Celery worker",
          SUPERVISOR: "convoy worker (+ restart)"}
PHASES = ("provision", "reserve", "parent test", "child test", "cleanup")
ERRORS = (AssertionError, RuntimeError, ConvoyError, redis.RedisError, psutil.Error, OSError)


# --- kills -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    idle: float  # kill -> every device idle (s)
    ended: float  # kill -> the parent's final state (s, Redis clock)
    outcome: str


def serve_keys(pubkey: str) -> ThreadingHTTPServer:
    """``/alice.keys`` on a free loopback port, in a daemon thread (the reservation imports gh:alice)."""
    body = pubkey.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/alice.keys"
            data = body if found else b"Not Found\n"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="keys", daemon=True).start()
    return server


def reach(condition: Callable[[], object], what: str, timeout: float = STAGE_TIMEOUT) -> None:
    if not wait_until(condition, timeout):
        raise RuntimeError(f"{what} not reached within {timeout:g}s")


def stage(lab: Lab, fault: str, phase: str) -> tuple[str, list[str]]:
    """Submit the cell's two-device job and wait until the kill can land in ``phase``; (parent, children)."""
    from convoy.coordinator.api import submit_job

    wait = WAIT_FOR
    parent_doc: dict[str, Any] = {"test_data": {"test_cmds": "true"}}
    child_doc: dict[str, Any] = {}
    if phase == "reserve":
        parent_doc = {"reserve_data": {"ssh_keys": ["gh:alice"], "timeout": "600"}}
    elif phase == "parent test":
        parent_doc = {"test_data": {"test_cmds": f"echo started; {wait}"}}
    elif phase == "child test":
        parent_doc, child_doc = {}, {"test_data": {"test_cmds": f"echo testing; {wait}"}}
    parent = submit_job({"job_queue": "multi", **parent_doc,
                         "provision_data": {"jobs": [{"job_queue": q, **child_doc} for q in lab.queues]}})
    children = lab.store.children(parent)
    victim, store = children[1], lab.store
    if phase == "provision":
        reach(lambda: store.state(victim) == JobState.PROVISION, "provisioning")
    elif phase == "reserve":
        reach(lambda: bool(lab.field(parent, "reserve_until")), "the reservation")
    elif phase == "parent test":
        reach(lambda: bool(lab.field(parent, "script_pgid")), "the parent's test_cmds")
    elif phase == "child test":
        reach(lambda: all("testing" in store.output(c, "test") for c in children), "the children's test")
    else:
        cleaning = parent if fault == COORDINATOR else victim
        reach(lambda: store.state(cleaning) == JobState.CLEANUP, "cleanup")
    return parent, children


def let_go(lab: Lab, job_ids: list[str]) -> None:
    """The go-file, in each job's own directory (its commands see nothing else of the host's)."""
    for job_id in job_ids:
        job_dir = Path(lab.env["CONVOY_STATE_DIR"]) / "jobs" / job_id
        if job_dir.is_dir():
            (job_dir / "go").touch()


def one_run(lab: Lab, fault: str, phase: str) -> Run:
    from convoy.coordinator.api import release_reservation

    parent, children = stage(lab, fault, phase)
    pid = 0
    if fault == DEVICE:
        reach(lambda: bool(lab.field(children[1], "device")), "the victim's device")
        pid = lab.device_worker_pid(str(lab.field(children[1], "device")))
    elif fault == COORDINATOR:
        pid = lab.coordinator_pid()
    at = time.time()
    if fault == SUPERVISOR:
        killed = lab.kill_worker_supervisor()
        lab.start_worker()  # the service manager starts the host again
    else:
        killed = lab.kill(pid)
    let_go(lab, [parent, *children])
    if phase == "reserve":
        try:
            release_reservation(parent)
        except ConvoyError as exc:
            log(f"{fault} / {phase}: release: {exc}")
    idle = lab.wait_idle(IDLE_TIMEOUT) - killed
    reach(lambda: lab.store.state(parent) in FINAL_STATES, "the parent's end")
    row = lab.store.fields([parent], "state", "outcome")[0]
    ended = first(state_events(lab.client, parent), row["state"])
    return Run(idle, (ended or float("nan")) - at, str(row["outcome"] or row["state"]))


def kills(runs: int, scratch: Path, *, keep: bool) -> None:
    load = os.getloadavg()[0]
    key = scratch / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   stdin=subprocess.DEVNULL)
    keys = serve_keys(Path(f"{key}.pub").read_text())
    server = RedisServer(scratch / "redis").start()
    lab: Lab | None = None
    results: dict[tuple[str, str], list[Run]] = {}
    failures: list[str] = []
    try:
        devices = emulated_devices({"rec-a": 1, "rec-b": 1}, prefix="rec",
                                   extra_config={"provision_delay": DELAY_S, "cleanup_delay": DELAY_S})
        lab = Lab(server.url, scratch / "lab", devices,
                  env={"CONVOY_GITHUB_KEYS_URL": f"http://127.0.0.1:{keys.server_address[1]}/{{user}}.keys"})
        os.environ.update(CONVOY_REDIS_URL=server.url, CONVOY_STATE_DIR=lab.env["CONVOY_STATE_DIR"])
        lab.start(concurrency=2)
        log(f"kills: lab ready (redis {redact_url(server.url)}, logs in {lab.root})")
        for run in range(runs):
            for phase in PHASES:
                for fault in FAULTS:
                    lab.wait_idle(IDLE_TIMEOUT)
                    time.sleep(0.3)  # the devices' Celery tasks end a moment after their release
                    try:
                        result = one_run(lab, fault, phase)
                    except ERRORS as exc:
                        failures.append(f"run {run + 1}, {fault} / {phase}: {exc}")
                        log(f"FAILED: {failures[-1]}")
                        continue
                    results.setdefault((fault, phase), []).append(result)
                    log(f"run {run + 1}: {fault} / {phase}: idle after {result.idle:.1f}s, "
                        f"job ended after {result.ended:.1f}s ({result.outcome})")
    finally:
        if lab is not None:
            lab.stop()
        server.stop()
        keys.shutdown()
        keys.server_close()
    report_kills(runs, results, failures, load)
    if keep:
        print(f"\n  logs: {scratch / 'lab'} (state/logs/: coordinator.log, the device workers' logs)")


def report_kills(runs: int, results: dict[tuple[str, str], list[Run]], failures: list[str], load: float) -> None:
    def cell(fault: str, phase: str, pick: str) -> str:
        xs = results.get((fault, phase), [])
        if not xs:
            return "-"
        if pick == "idle":
            return f"{pct([r.idle for r in xs], 0.5):.1f} / {max(r.idle for r in xs):.1f}"
        counts = Counter(r.outcome for r in xs)
        return f"{pct([r.ended for r in xs], 0.5):.1f}  " + " ".join(f"{n} {o}" for o, n in sorted(counts.items()))

    print(f"== recovery: kill -9 in each phase of a two-device multi job ({machine_line()}; "
          f"1-min load at this part's start {load:.2f})")
    print(f"   {runs} run(s) per cell, interleaved; default leases (15 s) and heartbeats (5 s); emulated devices "
          f"with provision_delay = cleanup_delay = {DELAY_S:g} s; test_cmds released and reservations released "
          "right after the kill")
    print()
    print(table(["kill -> every device idle, p50 / max s", *PHASES],
                [[FAULTS[f], *(cell(f, p, "idle") for p in PHASES)] for f in FAULTS]))
    every = [r.idle for xs in results.values() for r in xs]
    p50 = pct(every, 0.5)
    print(f"\n  all cells: n = {len(every)}, p50 {p50:.1f} s, max {max(every, default=float('nan')):.1f} s;  "
          f"target p50 <= {TARGET_S:g} s: {'met' if p50 <= TARGET_S else 'MISSED'}")
    print()
    print(table(["kill -> the job's final state, p50 s; outcomes", *PHASES],
                [[FAULTS[f], *(cell(f, p, "ended") for p in PHASES)] for f in FAULTS]))
    for failure in failures:
        print(f"  !! {failure}")


# --- reservations open -------------------------------------------------------------------------
SIM_QUEUE = "sim"
RESERVE_DOC = {"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": SIM_QUEUE}] * 2},
               "reserve_data": {"ssh_keys": ["gh:alice"], "timeout": "21600"}}
SETTLE_S, WINDOW_S, MONITOR_S = 12.0, 10.0, 11.0


class Keeper:
    """Renews the simulated devices' worker leases and alive marks every 4 s, as their workers would."""

    def __init__(self, client: redis.Redis, locks: list[DeviceLock]) -> None:
        self.client, self.locks = client, locks
        self.commands = 0  # sent to Redis by this keeper (subtracted from the coordinator's count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keeper", daemon=True)

    def start(self) -> Keeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(4.0):
            for lock in self.locks:
                lock.renew()
            with self.client.pipeline(transaction=False) as pipe:
                for lock in self.locks:
                    AliveMark.of_device(lock.device).set(pipe)
                pipe.execute()
            # EVALSHA, the GET and PEXPIRE inside it (commandstats counts a script's commands), the mark's SET
            self.commands += 4 * len(self.locks)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for lock in self.locks:
            lock.release()


def open_reservations(client: redis.Redis, n: int) -> Keeper:
    """N parents holding a reservation, each on 2 simulated devices; the keeper of the devices' leases."""
    store, host = JobStore(client), socket.gethostname()
    names = [f"sim-{i:04d}" for i in range(2 * n)]
    for name in names:
        register(client, DeviceConfig(name=name, queues=(SIM_QUEUE,)), host)
    locks = [DeviceLock(client, name) for name in names]
    if any(lock.try_acquire() is not None for lock in locks):
        raise RuntimeError("a simulated device's lease is held by someone else")
    keeper = Keeper(client, locks).start()
    until = time.time() + 6 * 3600
    for i in range(n):
        parent, children = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(2)]
        with store.pipeline() as pipe:
            store.create(parent, RESERVE_DOC, queue="multi", pipe=pipe)
            for child in children:
                store.create(child, {"job_queue": SIM_QUEUE}, queue=SIM_QUEUE, parent_job_id=parent, pipe=pipe)
            pipe.execute()
        for child, device in zip(children, names[2 * i:2 * i + 2], strict=True):
            claim_device(client, device, child)
            store.transition(child, JobState.PROVISION, device=device)
            store.transition(child, JobState.ALLOCATED)
        for state in (JobState.PROVISION, JobState.ALLOCATED, JobState.RESERVE):
            store.transition(parent, state)
        store.mark_done(parent, ParentStep.COLLECT)
        with store.pipeline() as pipe:
            store.set_fields(parent, pipe, device_children=children, has_reserve="1",
                             reserve_until=f"{until:.3f}", reserve_started=f"{time.time():.3f}")
            set_timer(pipe, Timer.RESERVATION, parent, until)
            store.parent_started(parent, pipe)
            pipe.execute()
    return keeper


def celery_worker(supervisor: subprocess.Popen[bytes]) -> psutil.Process:
    def find() -> psutil.Process | None:
        for child in psutil.Process(supervisor.pid).children(recursive=True):
            try:
                if "coordinator@" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    found = wait_until(find, 60)
    if not isinstance(found, psutil.Process):
        raise RuntimeError("no coordinator@ Celery worker under the coordinator")
    return found


def sample(worker: psutil.Process, client: redis.Redis, keeper: Keeper) -> tuple[float, int, int, int]:
    """(worker CPU s, Redis commands in all, scheduler passes begun, this process's commands)."""
    cpu = worker.cpu_times()
    stats: Any = client.info("commandstats")
    total = sum(int(v["calls"]) for v in stats.values())
    passes = int(stats.get("cmdstat_zrangebyscore", {}).get("calls", 0))
    return cpu.user + cpu.system, total, passes, keeper.commands


def pass_times(url: str, seconds: float) -> list[float]:
    """Wall time of each scheduler pass seen by MONITOR within ``seconds``."""
    out, begun = [], None
    client = make_client(url)
    deadline = time.monotonic() + seconds
    with client.monitor() as monitor:
        while time.monotonic() < deadline:
            entry = monitor.next_command()
            command = str(entry.get("command", ""))
            if command.startswith("ZRANGEBYSCORE convoy:timers"):
                begun = float(entry["time"])
            elif command.startswith("ZRANGE convoy:timers 0 0") and begun is not None:
                out.append(float(entry["time"]) - begun)
                begun = None
    client.close()
    return out


def measure(url: str, port: int, n: int, state_dir: Path) -> list[str]:
    client = make_client(url)
    client.flushall()
    t0 = time.monotonic()
    keeper = open_reservations(client, n)
    log(f"reservations: {n} open on {2 * n} simulated devices in {time.monotonic() - t0:.1f}s")
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CONVOY_REDIS_URL": url, "CONVOY_STATE_DIR": str(state_dir)}
    with (state_dir / "coordinator.out").open("ab") as out:
        proc = subprocess.Popen([CONVOY, "coordinator", "--concurrency", "2"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        if not wait_until(lambda: not missing(client, [AliveMark.of_coordinator()]), 90):
            raise RuntimeError(f"the coordinator did not come up (logs in {state_dir})")
        time.sleep(SETTLE_S)
        worker = celery_worker(proc)
        a = sample(worker, client, keeper)
        time.sleep(WINDOW_S)
        b = sample(worker, client, keeper)
        threads = worker.num_threads()
        conns = [c for c in worker.net_connections(kind="tcp") if c.raddr and c.raddr.port == port]
        passes = max(1, b[2] - a[2])
        commands = (b[1] - a[1]) - (b[3] - a[3]) - 1  # minus the keeper's and one INFO
        walls = pass_times(url, MONITOR_S)
        store = JobStore(client)
        parents = list(store.active_parents())
        still = sum(s == JobState.RESERVE for s in store.states(parents).values())
        return [f"N={n:,}", str(threads), str(len(conns)), f"{still:,}/{n:,}",
                f"{(b[0] - a[0]) / passes * 1000:,.0f}", f"{commands / passes:,.0f}",
                f"{pct(walls, 0.5) * 1000:,.0f}" if walls else "-", str(b[2] - a[2])]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        keeper.stop()
        client.close()


def reservations(sizes: list[int], scratch: Path, *, keep: bool) -> None:
    load = os.getloadavg()[0]
    server = RedisServer(scratch / "redis-reservations").start()
    rows = []
    try:
        for n in sizes:
            rows.append(measure(server.url, server.port, n, scratch / f"coordinator-{n}"))
            log(f"reservations: N={n} done")
    finally:
        server.stop()
    base = rows[0] if rows else None
    print(f"== recovery: the coordinator with N reservations open ({machine_line()}; "
          f"1-min load at this part's start {load:.2f})")
    print(f"   one convoy coordinator --concurrency 2 on a fresh Redis db per N; its Celery worker process read "
          f"{SETTLE_S:g} s after it came up; CPU and commands over the next {WINDOW_S:g} s, pass wall time "
          f"by MONITOR over {MONITOR_S:g} s")
    print()
    headers = ["", "threads", "Redis connections", "still reserved", "CPU ms / pass", "commands / pass",
               "pass wall ms p50", "passes"]
    print(table(headers, rows))
    if base is not None:
        ratios = [f"{r[0]}: threads {int(r[1]) / int(base[1]):.2f}x, connections "
                  f"{int(r[2]) / max(1, int(base[2])):.2f}x" for r in rows[1:]]
        flat = all(r[1] == base[1] and r[2] == base[2] for r in rows)
        print(f"\n  ratio to {base[0]}: " + ("; ".join(ratios) or "-") +
              f";  target flat: {'met' if flat else 'MISSED'}")
    if keep:
        print(f"\n  logs: {scratch}/coordinator-N/logs/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="kills per (process, phase) cell")
    parser.add_argument("--sizes", default="1,100,1000", help="reservations open at once")
    parser.add_argument("--no-kills", action="store_true", help="skip the kill table")
    parser.add_argument("--no-reservations", action="store_true", help="skip the reservations part")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = parser.parse_args()
    scratch = scratch_dir("convoy-bench-recovery-")
    try:
        if not args.no_kills:
            kills(args.runs, scratch, keep=args.keep)
        if not args.no_reservations:
            if not args.no_kills:
                print()
            reservations(sorted({int(x) for x in args.sizes.split(",") if x.strip()}), scratch, keep=args.keep)
    finally:
        if args.keep:
            print(f"\n  scratch: {scratch}")
        else:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
