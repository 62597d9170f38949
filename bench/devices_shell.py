"""The device-side MultiNode path for ``multinode_latency.py``: ``lava-*`` helpers in the LAVA test shell.

:class:`DeviceShells` starts a farm of emulated devices (sandboxed where the
platform allows), provisions each one with the ``emulated`` connector and the
agent key, exactly as a device's worker does, and then drives one test-shell
session per group member with the worker's own code:
:func:`convoy.tasks.run.testshell.runner.run_lava_tests` (overlay built and
copied by tar, one real OpenSSH ``ssh -T`` session, marker lines relayed to a
:class:`~convoy.tasks.run.relay.MultiNodeRelay`, replies written back on the
session's input).  Each member's driver runs in a process of its own, as each
device has its own worker process.

No Celery, no job store: the group is created with
:func:`convoy.coordinator.multinode.group.create_group` on the bench's private
Redis, and the definitions print timestamps (bash's ``$EPOCHREALTIME``, the
host's clock: the sandboxes have no time namespace) around each call; the
bench reads them from the sessions' output.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convoy.config.devices import DeviceConfig
from convoy.connectors.emulated.connector import EmulatedConnector
from convoy.connectors.emulated.farm import DeviceFarm
from convoy.connectors.sshkeys import ensure_agent_key
from convoy.tasks.run.ssh import write_ssh_setup

__all__ = ["DeviceShells", "MemberRun", "send_steps", "sync_steps", "timestamps", "wait_steps"]

#: a member's whole session (all rounds) must end within this many seconds
SESSION_TIMEOUT = 900.0


@dataclass
class MemberRun:
    """What one member's test-shell session gave: the action's status and its output."""

    job_id: str
    status: int
    output: str


@dataclass
class _Device:
    name: str
    host: str
    ssh: Path
    sandboxed: bool


def sync_steps(rounds: int, spread_us: int) -> list[str]:
    """Each round: a random pause in [0, spread), the time, ``lava-sync loop`` (one id reused), the time."""
    return [f"bash -c 'for i in $(seq 1 {rounds}); do sleep 0.$(printf %06d $((RANDOM * {spread_us} / 32768))); "
            "b=$EPOCHREALTIME; lava-sync loop >/dev/null || exit 1; a=$EPOCHREALTIME; "
            "echo \"MNB sync $i $b $a\"; done'"]


def wait_steps(rounds: int) -> list[str]:
    """The waiting member: ``lava-sync r`` (the round starts), then ``lava-wait m<i>``; times before and after."""
    return [f"bash -c 'for i in $(seq 1 {rounds}); do lava-sync r >/dev/null || exit 1; w=$EPOCHREALTIME; "
            "lava-wait m$i || exit 1; a=$EPOCHREALTIME; echo \"MNB recv $i $w $a\"; done'"]


def send_steps(rounds: int) -> list[str]:
    """The sending member: ``lava-sync r``, 50-60 ms for the waiter to be waiting, the time, ``lava-send m<i>``."""
    return [f"bash -c 'for i in $(seq 1 {rounds}); do lava-sync r >/dev/null || exit 1; "
            "sleep 0.0$((50000 + RANDOM % 10000)); s=$EPOCHREALTIME; echo \"MNB send $i $s\"; "
            "lava-send m$i seq=$i || exit 1; done'"]


def _member(url: str, group_id: str, job_id: str, ssh: str, host: str, steps: list[str], work: str,
            results: Any) -> None:
    """One member's worker side, in a process of its own: the test shell's driver and its relay."""
    import redis

    from convoy.tasks.run.relay import MultiNodeRelay
    from convoy.tasks.run.testshell.runner import device_environment, run_lava_tests

    client = redis.Redis.from_url(url)
    cancel = threading.Event()
    relay = MultiNodeRelay(client, group_id=group_id, job_id=job_id, role="peer", timeout=300.0, cancel=cancel)
    out: list[str] = []
    tests = [{"definitions": [{"from": "inline", "name": "mnbench",
                               "repository": {"metadata": {"name": "mnbench"}, "run": {"steps": steps}}}]}]
    try:
        status = run_lava_tests(tests, job_id=job_id, work_dir=Path(work), ssh=Path(ssh), host=host,
                                environment=device_environment({}, sandboxed=True, device_ip=host),
                                out=out.append, record=lambda case: None, relay=relay, cancel=cancel,
                                deadline=None, global_timeout=SESSION_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - reported to the bench
        out.append(f"bench: the member's driver failed: {exc!r}\n")
        status = -1
    results.put((job_id, status, "".join(out)))


class DeviceShells:
    """``count`` emulated devices, provisioned, each with its job directory and ``ssh`` wrapper."""

    def __init__(self, count: int, state_dir: Path) -> None:
        self.count = count
        self.state_dir = Path(state_dir)
        self.farm: DeviceFarm | None = None
        self.devices: list[_Device] = []

    def start(self) -> DeviceShells:
        key = ensure_agent_key(self.state_dir / "keys")
        configs = [DeviceConfig(f"mnb-{i}", (f"mnb-{i}",)) for i in range(self.count)]
        self.farm = DeviceFarm(configs, self.state_dir, startup_timeout=120.0).start()

        def provision(device: DeviceConfig) -> _Device:
            connector = EmulatedConnector(device, key, state_dir=self.state_dir)
            info = connector.provision({}, threading.Event(), lambda line: None)
            target = connector.ssh_target()
            ssh_bin = write_ssh_setup(self.state_dir / "jobs" / device.name, key, [target])
            return _Device(device.name, target.host, ssh_bin / "ssh", bool(info.get("sandboxed")))

        with ThreadPoolExecutor(4) as pool:
            self.devices = list(pool.map(provision, self.farm.devices))
        return self

    @property
    def sandboxed(self) -> bool:
        return bool(self.devices) and all(d.sandboxed for d in self.devices)

    def stop(self) -> None:
        if self.farm is not None:
            self.farm.stop()
            self.farm = None

    def run(self, url: str, steps: list[list[str]]) -> list[MemberRun]:
        """A new group of ``len(steps)`` members on the first devices, member i running ``steps[i]``.

        Every member's session runs at once (a process each); returns when all ended."""
        import redis

        from convoy.coordinator.multinode.group import create_group

        n = len(steps)
        if n > len(self.devices):
            raise ValueError(f"{n} members but only {len(self.devices)} devices")
        tag = uuid.uuid4().hex[:8]
        group_id = f"mnb-{tag}"
        jobs = [f"{tag}-{i}" for i in range(n)]
        create_group(redis.Redis.from_url(url), group_id, {j: "peer" for j in jobs}, timeout=300.0)
        ctx = mp.get_context("spawn")  # a fresh interpreter per member, as a worker process is
        results = ctx.Queue()
        procs = []
        for i, (device, job, mine) in enumerate(zip(self.devices, jobs, steps, strict=False)):
            work = self.state_dir / "jobs" / device.name / job
            work.mkdir(parents=True, exist_ok=True)
            procs.append(ctx.Process(target=_member, name=f"mnb-member-{i}", daemon=True,
                                     args=(url, group_id, job, str(device.ssh), device.host, mine, str(work),
                                           results)))
        for proc in procs:
            proc.start()
        got: dict[str, MemberRun] = {}
        try:
            for _ in procs:
                job, status, output = results.get(timeout=SESSION_TIMEOUT + 60)
                got[job] = MemberRun(job, status, output)
        finally:
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        return [got[j] for j in jobs]


def timestamps(run: MemberRun, kind: str) -> dict[int, list[float]]:
    """The ``MNB <kind> <round> <t>...`` lines of a member's output: round -> times (seconds)."""
    found: dict[int, list[float]] = {}
    for line in run.output.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "MNB" and parts[1] == kind:
            found[int(parts[2])] = [float(p) for p in parts[3:]]
    return found
