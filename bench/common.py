"""Shared pieces of the benchmarks: statistics, an embedded cluster, peer Celery workers, job events.

Nothing here asserts anything about time: the benchmarks print numbers.
"""
from __future__ import annotations

import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import redis

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
#: the machine's 1-minute load when the benchmark started (other work skews every figure)
LOAD_AT_START = os.getloadavg()[0]


# --- statistics ----------------------------------------------------------------------
def pct(xs: Iterable[float], q: float) -> float:
    """Percentile ``q`` (0..1) with linear interpolation between closest ranks."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(seconds: Iterable[float]) -> dict[str, float]:
    """n, p50, p95, max and mean, in milliseconds, of durations given in seconds."""
    ms = [x * 1000.0 for x in seconds]
    if not ms:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "max": float("nan"), "mean": float("nan")}
    return {"n": len(ms), "p50": pct(ms, 0.5), "p95": pct(ms, 0.95), "max": max(ms), "mean": sum(ms) / len(ms)}


def fmt_ms(x: float) -> str:
    if math.isnan(x):
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """A plain-text table, columns right-aligned except the first."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    out = []
    for j, r in enumerate([headers, *rows]):
        cells = [str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        out.append(indent + "  ".join(cells).rstrip())
        if j == 0:
            out.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine_line() -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    import celery
    import kombu

    return (f"{now}; {os.cpu_count()} vCPU, {platform.machine()}, Linux {platform.release()}; "
            f"Python {platform.python_version()}, Celery {celery.__version__}, kombu {kombu.__version__}, "
            f"redis-py {redis.__version__}; 1-min load at start {LOAD_AT_START:.2f}")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- the embedded convoy cluster ----------------------------------------------------
def start_cluster(queues: dict[str, int], state_dir: Path, ready_timeout: float = 900.0):
    """An embedded convoy cluster (private Redis, farm, one worker per device, coordinator).

    ``EmbeddedCluster.start`` waits 90 s for the workers; starting 50-100
    Celery workers on 2 vCPUs can take longer, so the wait is lengthened here.
    """
    from convoy.workers.embedded.cluster import EmbeddedCluster, emulated_devices

    class BenchCluster(EmbeddedCluster):
        def wait_ready(self, timeout: float = ready_timeout) -> None:
            super().wait_ready(timeout)

    devices = emulated_devices(queues, prefix="bench")
    cluster = BenchCluster(state_dir, devices, log=lambda m: log(f"cluster: {m}"))
    t0 = time.monotonic()
    cluster.start()
    log(f"convoy cluster of {len(devices)} device(s) + coordinator ready in {time.monotonic() - t0:.1f}s "
        f"(redis {cluster.redis_url})")
    return cluster


def peer_url(cluster_url: str, db: int = 2) -> str:
    """The same Redis server as the cluster, another database."""
    return cluster_url.rsplit("/", 1)[0] + f"/{db}"


def use_peer_db(cluster) -> str:
    """Point ``peer_celery`` (``PEER_REDIS_URL``) at an emptied database of the cluster's Redis; its URL."""
    import redis

    url = peer_url(cluster.redis_url)
    os.environ["PEER_REDIS_URL"] = url
    redis.Redis.from_url(url).flushdb()
    return url


# --- peer (bare Celery) workers -----------------------------------------------------
class PeerWorkers:
    """``celery -A peer_celery worker`` subprocesses; each started and stopped by its pid."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url = url
        self.log_dir = Path(log_dir)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "PEER_REDIS_URL": url,
                    "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}

    def add(self, name: str, queues: list[str], concurrency: int = 1) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "celery", "-A", "peer_celery", "worker",
               "-Q", ",".join(queues), "-n", f"{name}@bench", "-P", "threads", "-c", str(concurrency),
               "--without-gossip", "--without-mingle", "-l", "WARNING",
               "--logfile", str(self.log_dir / f"{name}.log")]
        out = (self.log_dir / f"{name}.out").open("ab")
        try:
            self.procs[name] = subprocess.Popen(cmd, cwd=BENCH_DIR, env=self.env, stdin=subprocess.DEVNULL,
                                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()

    def wait_ready(self, timeout: float = 900.0) -> None:
        client = redis.Redis.from_url(self.url)
        t0 = time.monotonic()
        try:
            while True:
                missing = [n for n in self.procs if not client.exists(f"peer:ready:{n}@bench")]
                if not missing:
                    log(f"{len(self.procs)} peer worker(s) ready in {time.monotonic() - t0:.1f}s")
                    return
                dead = [n for n in missing if self.procs[n].poll() is not None]
                if dead:
                    raise RuntimeError(f"peer worker(s) exited: {', '.join(dead)} (logs in {self.log_dir})")
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"peer workers not ready after {timeout:g}s: {', '.join(missing)}")
                time.sleep(0.1)
        finally:
            client.close()

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def drop_result_subscriptions(app) -> None:
    """Forget the peer app's leftover result subscriptions while Redis still runs.

    A chord's header results are subscribed to when sent and never read, so
    their ``AsyncResult.__del__`` would unsubscribe at interpreter exit, after
    Redis has stopped, and print a traceback.  Closing the subscription first
    leaves them nothing to do.
    """
    import gc

    gc.collect()
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is None:
        return
    try:
        getattr(consumer, "subscribed_to", set()).clear()
        consumer.stop()
    except Exception as exc:  # noqa: BLE001 - cosmetic only
        log(f"could not drop the peer's result subscriptions: {exc!r}")


# --- convoy job events --------------------------------------------------------------
def teardown(*, cluster, peers, scratch: Path, keep: bool, events=None) -> None:
    """Stop what a benchmark started (each of which may be None), then remove its scratch dir."""
    import shutil
    import sys

    if events is not None:
        events.stop()
    if "peer_celery" in sys.modules:
        drop_result_subscriptions(sys.modules["peer_celery"].app)
    if peers is not None:
        peers.stop()
    if cluster is not None:
        cluster.stop()
    if not keep:
        shutil.rmtree(scratch, ignore_errors=True)


def id_seconds(stream_id: str) -> float:
    """A stream entry id's time (Redis's clock, millisecond resolution)."""
    return int(stream_id.split("-", 1)[0]) / 1000.0


def state_events(client: redis.Redis, job_id: str) -> list[tuple[str, float]]:
    """(state, Redis time in s) of every state change of the job, in order.

    Transitions carry ``ts`` (Redis TIME, microseconds); the initial ``waiting``
    entry has none, so its stream id (milliseconds) stands in.
    """
    from convoy.coordinator.state import keys

    out = []
    for entry_id, fields in client.xrange(keys.job_events(job_id)):
        if fields.get("type") != "state":
            continue
        ts = float(fields["ts"]) if fields.get("ts") else id_seconds(entry_id)
        out.append((fields["state"], ts))
    return out


def first(events: list[tuple[str, float]], state: str) -> float | None:
    for s, ts in events:
        if s == state:
            return ts
    return None


def phase_events(client: redis.Redis, job_id: str) -> dict[tuple[str, str], float]:
    """{(phase, "start"|"end"): stream-id time} of the job's phase events (ms resolution)."""
    from convoy.coordinator.state import keys

    out: dict[tuple[str, str], float] = {}
    for entry_id, fields in client.xrange(keys.job_events(job_id)):
        if fields.get("type") == "phase":
            out.setdefault((fields["phase"], fields["event"]), id_seconds(entry_id))
    return out


def output_event_time(client: redis.Redis, job_id: str, phase: str, contains: str) -> float | None:
    """Stream-id time of the job's first output chunk of ``phase`` containing ``contains``."""
    from convoy.coordinator.state import keys

    for entry_id, fields in client.xrange(keys.job_events(job_id)):
        if fields.get("type") == "output" and fields.get("phase") == phase and contains in fields.get("data", ""):
            return id_seconds(entry_id)
    return None


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# --- Celery task events (convoy's workers run with -E) -----------------------------
class TaskEvents:
    """Records, in a background thread, the first timestamp of each event type per task id.

    Only tasks whose id contains ``match`` are kept (the parent's chain tasks are
    ``<parent id>.collect`` etc.).  Timestamps are the sender's ``time.time()``:
    the same host clock as Redis TIME on this machine.
    """

    def __init__(self, app, match: str = ".") -> None:
        import threading

        self.app = app
        self.match = match
        self.seen: dict[str, dict[str, float]] = {}
        self._receiver = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-events", daemon=True)

    def start(self) -> TaskEvents:
        self._thread.start()
        self._ready.wait(10)
        time.sleep(0.3)  # the subscription is made when capture starts
        return self

    def _on_event(self, event: dict) -> None:
        uuid = event.get("uuid")
        if uuid and self.match in uuid:
            self.seen.setdefault(uuid, {}).setdefault(event["type"], float(event.get("timestamp", 0.0)))

    def _run(self) -> None:
        try:
            with self.app.connection_for_read() as conn:
                self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
                self._ready.set()
                self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception as exc:  # noqa: BLE001 - the benchmark goes on without the breakdown
            if self._receiver is None or not self._receiver.should_stop:
                log(f"task events unavailable: {exc!r}")
            self._ready.set()

    def get(self, task_id: str, event_type: str) -> float | None:
        return self.seen.get(task_id, {}).get(event_type)

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=3)
