"""The scheduler on real workers: no deadlock, no partial holds, priority, submit-time checks, maintenance.

Real Redis, one real Celery worker per emulated device, the coordinator worker
running the scheduler.  What each job held, and when, is read back from the
records the scheduler and the workers write: a member's ``assigned_at`` (the
scheduler's one atomic step), its ``provision`` state event (the worker
claiming the device) and its phases (provision start, cleanup end).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest

from convoy.config.devices import DeviceConfig
from convoy.connectors.emulated.addresses import assign_addresses
from convoy.coordinator import api
from convoy.coordinator.api import cancel_job, job_results, job_status, submit_job, wait_for_job
from convoy.coordinator.scheduling.feasibility import feasible
from convoy.coordinator.scheduling.model import Device, Requirement
from convoy.coordinator.scheduling.requirements import requirements, waiting_job
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.devices import DeviceSummary, device_summaries
from convoy.errors import JobValidationError
from convoy.workers.embedded.cluster import emulated_devices
from helpers import CONVOY, assert_all_released, unique_queue, wait_for, wait_for_state

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 120
#: a job whose waiting entry became visible this much before another job's assignment was surely seen by
#: the pass that made it (a pass reads the waiting set, then assigns within milliseconds)
SEEN_MARGIN_S = 1.0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONVOY, *args], capture_output=True, text=True, timeout=30, env=dict(os.environ))


# --- what the records say -------------------------------------------------------------------------
def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True)
class Hold:
    """One member (a child, or a single-device job) on its device: from assignment to the end of cleanup."""

    job_id: str  # the job the scheduler started (the parent of a child)
    member: str
    device: str
    assigned: float  # the scheduler's atomic step
    claimed: float  # the member's ``provision`` state event (the worker starts it; Redis clock)
    provision_start: float
    end: float  # cleanup ended: the device is released right after


def holds(job_id: str) -> list[Hold]:
    """What the job's members held, read from their records, state events and phases."""
    store = get_store()
    members = store.children(job_id) or [job_id]
    out = []
    for member in members:
        record = store.get(member)
        phases = store.phases(member)
        claimed = [float(fields["ts"]) for _, _, fields in store.read_events({member: "0-0"})
                   if fields.get("type") == "state" and fields.get("state") == "provision" and fields.get("ts")]
        assert record.get("assigned_at") and record.get("device"), f"{member} never ran: {record}"
        assert record["device"] == record["assigned_device"], f"{member} ran on another device than assigned"
        assert len(claimed) == 1, f"{member} started {len(claimed)} times"
        out.append(Hold(job_id, member, record["device"], epoch(record["assigned_at"]), claimed[0],
                        epoch(phases["provision"]["started"]), epoch(phases["cleanup"]["ended"])))
    return out


def assert_held_only_while_running(all_holds: Iterable[Hold]) -> None:
    """No device held by a waiting job: all of a job's devices at once, each claimed after that step,
    and the holds of different jobs on one device never overlap."""
    by_job: dict[str, list[Hold]] = {}
    by_device: dict[str, list[Hold]] = {}
    for hold in all_holds:
        by_job.setdefault(hold.job_id, []).append(hold)
        by_device.setdefault(hold.device, []).append(hold)
        assert hold.assigned <= hold.claimed and hold.assigned <= hold.provision_start, \
            f"{hold.member} was on {hold.device} before the scheduler assigned it: {hold}"
    for job_id, job_holds in by_job.items():
        assert len({h.assigned for h in job_holds}) == 1, f"job {job_id} got its devices in several steps"
        assert len({h.device for h in job_holds}) == len(job_holds), f"job {job_id} got a device twice"
    for device, device_holds in by_device.items():
        ordered = sorted(device_holds, key=lambda h: h.assigned)
        for before, after in pairwise(ordered):
            assert before.end <= after.assigned, \
                f"{device} was given to {after.job_id} before {before.job_id} released it: {before} / {after}"


def waiting_since(job_id: str) -> float:
    """When the job's waiting entry became visible (its first event, written in the same transaction)."""
    [(_, event_id, _)] = get_store().read_events({job_id: "0-0"})[:1]
    return int(event_id.split("-")[0]) / 1000.0


# --- submitting -----------------------------------------------------------------------------------
@pytest.fixture
def submit_times(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Each job's submit time exactly as the scheduler orders by (what submit_job puts in line)."""
    recorded: dict[str, float] = {}
    enqueue = api.enqueue

    def recording(target: Any, job_id: str, submitted: float, deadline: float | None = None) -> None:
        recorded[job_id] = submitted
        enqueue(target, job_id, submitted, deadline)

    monkeypatch.setattr(api, "enqueue", recording)
    return recorded


def submit_concurrently(batches: list[list[dict[str, Any]]]) -> list[str]:
    """Each batch submitted in order by its own thread, all threads starting at once; every job id."""
    barrier = threading.Barrier(len(batches))

    def submitter(batch: list[dict[str, Any]]) -> list[str]:
        barrier.wait(timeout=30)
        return [submit_job(job) for job in batch]

    with ThreadPoolExecutor(len(batches)) as pool:
        return [job_id for ids in pool.map(submitter, batches) for job_id in ids]


def multi(queues: Iterable[str], sleeps: Iterable[float] | None = None, **extra: Any) -> dict[str, Any]:
    children: list[dict[str, Any]] = [{"job_queue": q} for q in queues]
    for child, seconds in zip(children, sleeps or (), strict=False):
        child["test_data"] = {"test_cmds": f"sleep {seconds:.1f}"}
    return {"job_queue": "multi", "provision_data": {"jobs": children}, **extra}


def assert_passed(job_ids: Iterable[str], timeout: float = JOB_TIMEOUT) -> None:
    for job_id in job_ids:
        assert wait_for_job(job_id, timeout=timeout) == "complete"
        results = job_results(job_id)
        assert results["outcome"] == "pass", results


def summary_of(name: str) -> DeviceSummary:
    return next(d for d in device_summaries(get_store().client) if d.name == name)


def devices_as_seen(configs: Iterable[DeviceConfig]) -> dict[str, Device]:
    return {d.name: Device(d.name, frozenset(d.queues), d.device_type, frozenset(d.tags)) for d in configs}


# --- Done when 2: the soak ------------------------------------------------------------------------
SOAK_SEED = 9
SOAK_JOBS = 12
SOAK_SUBMITTERS = 3
PRIORITIES = (0, 50, 100)


def soak_lab() -> tuple[list[str], list[DeviceConfig]]:
    """Six devices: qa and qb served by two each; d5 serves qc and qd (so each has one device), qe by d6."""
    qa, qb, qc, qd, qe = (unique_queue(f"soak{x}") for x in "abcde")
    prefix = unique_queue("soak")
    serves = [(qa,), (qa,), (qb,), (qb,), (qc, qd), (qe,)]
    lab = assign_addresses(DeviceConfig(name=f"{prefix}-d{i}", queues=queues, connector="emulated")
                           for i, queues in enumerate(serves, start=1))
    return [qa, qb, qc, qd, qe], lab


def random_jobs(rng: random.Random, queues: list[str], lab: Iterable[Device], n: int) -> list[dict[str, Any]]:
    """``n`` multi jobs of 2-4 children, each of which the lab can run, random priorities and short sleeps."""
    devices = list(lab)
    jobs: list[dict[str, Any]] = []
    while len(jobs) < n:
        size = rng.randint(2, 4)
        job = multi([rng.choice(queues) for _ in range(size)], [rng.uniform(0.2, 1.0) for _ in range(size)],
                    job_priority=rng.choice(PRIORITIES))
        if not feasible(waiting_job("candidate", job, 0.0), devices):
            jobs.append(job)
    return jobs


def assert_order_respected(job_ids: list[str], submitted: dict[str, float], all_holds: list[Hold],
                           lab: dict[str, Device]) -> tuple[int, int]:
    """A job started before one ahead of it in line (priority, then submit time) only on devices that one
    could not use (backfill that cannot delay it).

    Returns (pairs checked: a job started while one ahead of it was waiting, backfills among them).
    """
    store = get_store()
    docs = {job_id: store.get(job_id)["document"] for job_id in job_ids}
    reqs: dict[str, list[Requirement]] = {j: [r for _, r in requirements(docs[j])] for j in job_ids}
    line = {j: (-int(docs[j].get("job_priority") or 0), submitted[j], j) for j in job_ids}
    started = {h.job_id: h.assigned for h in all_holds}
    used: dict[str, set[str]] = {}
    for h in all_holds:
        used.setdefault(h.job_id, set()).add(h.device)
    seen = {j: waiting_since(j) for j in job_ids}
    checked = backfills = 0
    for ahead in job_ids:
        for behind in job_ids:
            if line[ahead] >= line[behind] or seen[ahead] + SEEN_MARGIN_S > started[behind]:
                continue  # not ahead in line, or the pass that started `behind` may not have seen it yet
            checked += 1
            if started[behind] < started[ahead]:
                usable = sorted(d for d in used[behind] if any(r.fits(lab[d]) for r in reqs[ahead]))
                assert not usable, (f"job {behind} (behind in line) started before {ahead} on {usable}, "
                                    f"which {ahead} could use: the head was delayed")
                backfills += 1
    return checked, backfills


def test_soak_of_random_multi_jobs_from_three_submitters_completes_without_holding_while_waiting(
        start_cluster, submit_times):
    queues, lab = soak_lab()
    start_cluster(devices=lab)
    seen = devices_as_seen(lab)
    jobs = random_jobs(random.Random(SOAK_SEED), queues, seen.values(), SOAK_JOBS)
    batches = [jobs[i::SOAK_SUBMITTERS] for i in range(SOAK_SUBMITTERS)]

    job_ids = submit_concurrently(batches)

    assert len(set(job_ids)) == SOAK_JOBS and set(submit_times) == set(job_ids)
    assert_passed(job_ids, timeout=180)
    all_holds = [h for job_id in job_ids for h in holds(job_id)]
    assert_held_only_while_running(all_holds)
    checked, backfills = assert_order_respected(job_ids, submit_times, all_holds, seen)
    print(f"soak: {SOAK_JOBS} jobs, {len(all_holds)} device holds; {checked} pairs started while a job ahead "
          f"in line waited, {backfills} of them backfilled")
    for job_id in job_ids:
        assert_all_released(job_id)
    assert {summary_of(d.name).health for d in lab} == {"idle"}


# --- Done when 3: two jobs, the same two devices, opposite order ---------------------------------
def test_two_jobs_wanting_the_same_two_devices_in_opposite_order_run_one_after_the_other(start_cluster):
    x, y = unique_queue("x"), unique_queue("y")
    start_cluster({x: 1, y: 1})

    first, second = submit_concurrently([[multi([x, y], [0.5, 0.5])], [multi([y, x], [0.5, 0.5])]])

    assert_passed([first, second])
    a, b = holds(first), holds(second)
    assert_held_only_while_running(a + b)
    span_a = (min(h.assigned for h in a), max(h.end for h in a))
    span_b = (min(h.assigned for h in b), max(h.end for h in b))
    assert span_a[1] <= span_b[0] or span_b[1] <= span_a[0], f"both jobs held devices at once: {span_a} {span_b}"
    assert_all_released(first)
    assert_all_released(second)


# --- Done when 4: submit-time checks ---------------------------------------------------------------
def job_count() -> int:
    return get_store().client.zcard(keys.JOBS)


def waiting_count() -> int:
    return get_store().client.zcard(keys.SCHEDULER_WAITING)


def test_two_children_on_a_one_device_queue_are_refused_and_nothing_is_stored(start_cluster):
    queue = unique_queue("lonely")
    start_cluster({queue: 1})
    before = (job_count(), waiting_count())

    with pytest.raises(JobValidationError) as refused:
        submit_job(multi([queue, queue]))

    assert f"provision_data.jobs[1]: needs a second device of queue '{queue}'; 1 registered" in str(refused.value)
    assert (job_count(), waiting_count()) == before


def test_a_job_for_an_offline_device_waits_says_why_and_runs_when_the_device_comes_back(start_cluster):
    queue = unique_queue("gone")
    [device] = emulated_devices({queue: 1}, prefix=unique_queue("away"))
    start_cluster(devices=[])  # the coordinator, scheduling
    start_cluster(devices=[device], coordinator=False).stop()  # registered, then its worker stopped
    wait_for(lambda: summary_of(device.name).health == "offline", timeout=30, what=f"{device.name} offline")

    job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": "echo ran"}})

    assert job_status(job_id) == "waiting"
    status = run_cli("queue-status", queue)
    assert status.returncode == 0, status.stderr
    [line] = [line for line in status.stdout.splitlines() if job_id in line] or [f"{job_id} not listed"]
    assert "position" in line and "offline" in line, f"queue-status does not say why the job waits:\n{status.stdout}"
    shown = run_cli("show", job_id)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["position"] >= 1 and "offline" in record["waiting_for"], record
    print(f"queue-status: {line.strip()}")

    start_cluster(devices=[device], coordinator=False)  # the device's worker is back
    assert_passed([job_id])
    assert get_store().get(job_id)["device"] == device.name


def lava_job(dtype: str, roles: dict[str, list[str]]) -> dict[str, Any]:
    """A LAVA MultiNode job: one device of ``dtype`` per role, with the role's tags; each role echoes its name."""
    def test_action(role: str) -> dict[str, Any]:
        return {"test": {"name": role, "role": [role], "definitions": [{
            "from": "inline", "name": role, "path": f"inline/{role}.yaml",
            "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": role},
                           "run": {"steps": [f"echo I am {role}"]}}}]}}

    return {"job_name": "tag selection", "priority": "medium", "timeouts": {"job": {"minutes": 5}},
            "protocols": {"lava-multinode": {"roles": {
                role: {"device_type": dtype, "count": 1, "tags": tags} for role, tags in roles.items()}}},
            "actions": [test_action(role) for role in roles]}


def test_lava_roles_get_devices_of_their_type_with_their_tags_and_an_unknown_tag_is_refused(start_cluster):
    dtype = unique_queue("board")
    prefix = unique_queue("lava")
    lab = assign_addresses(DeviceConfig(name=f"{prefix}-{suffix}", queues=(dtype,), connector="emulated",
                                        device_type=dtype, tags=tags)
                           for suffix, tags in [("bare", ()), ("usb", ("usb",)), ("usb-wifi", ("usb", "wifi"))])
    start_cluster(devices=lab)

    job_id = submit_job(lava_job(dtype, {"server": ["usb", "wifi"], "client": ["usb"]}))

    assert_passed([job_id])
    placed = {get_store().get(c)["role"]: get_store().get(c)["device"] for c in get_store().children(job_id)}
    assert placed == {"server": f"{prefix}-usb-wifi", "client": f"{prefix}-usb"}

    before = job_count()
    with pytest.raises(JobValidationError) as refused:
        submit_job(lava_job(dtype, {"server": ["usb"], "client": ["gpu"]}))
    assert f"role client: no device of device_type '{dtype}' has tag 'gpu'" in str(refused.value)
    assert job_count() == before


# --- maintenance ----------------------------------------------------------------------------------
def device_of(cluster: Any, queue: str) -> str:
    return next(d.name for d in cluster.devices if queue in d.queues)


def assert_still_waiting(job_id: str, witness_queue: str) -> None:
    """The job stays waiting through scheduling passes: a job submitted after it, elsewhere, ran meanwhile."""
    witness = submit_job({"job_queue": witness_queue})
    assert_passed([witness])
    assert job_status(job_id) == "waiting"


def test_a_job_waits_while_its_only_device_is_in_maintenance_and_runs_when_it_is_back(start_cluster):
    queue, elsewhere = unique_queue("maint"), unique_queue("witness")
    cluster = start_cluster({queue: 1, elsewhere: 1})
    name = device_of(cluster, queue)
    taken_out = run_cli("device", "maintenance", name, "--reason", "swapping the sd card")
    assert taken_out.returncode == 0, taken_out.stderr
    assert summary_of(name).health == "maintenance"

    job_id = submit_job({"job_queue": queue, "test_data": {"test_cmds": "true"}})
    assert_still_waiting(job_id, elsewhere)

    back = run_cli("device", "online", name)
    assert back.returncode == 0, back.stderr
    assert_passed([job_id])
    assert get_store().get(job_id)["device"] == name


def test_three_failed_provisionings_in_a_row_put_the_device_in_maintenance(start_cluster):
    queue, elsewhere = unique_queue("flaky"), unique_queue("witness")
    name = device_of(start_cluster({queue: 1}, provision_fail=True), queue)
    start_cluster({elsewhere: 1}, coordinator=False)

    failing = [submit_job({"job_queue": queue, "test_data": {"test_cmds": "true"}}) for _ in range(3)]
    fourth = submit_job({"job_queue": queue, "test_data": {"test_cmds": "true"}})

    for job_id in failing:
        assert wait_for_job(job_id, timeout=JOB_TIMEOUT) == "complete"
        results = job_results(job_id)
        assert results["outcome"] == "fail" and results["provision_status"] != 0, results
        assert job_results(job_id)["device"] == name
    summary = summary_of(name)
    assert summary.health == "maintenance"
    assert "provisioning failed 3 times in a row" in summary.maintenance
    assert "provision_fail" in summary.maintenance  # the last failure's reason
    assert_still_waiting(fourth, elsewhere)
    cancel_job(fourth)
    assert wait_for_job(fourth, timeout=JOB_TIMEOUT) in ("cancelled", "complete")


# --- priority -------------------------------------------------------------------------------------
def test_when_the_device_frees_the_higher_priority_job_starts_first(start_cluster):
    queue = unique_queue("prio")
    cluster = start_cluster({queue: 1})
    blocker = submit_job({"job_queue": queue, "test_data": {  # the go-ahead: a file in its own directory
        "test_cmds": "for i in $(seq 1200); do [ -e go ] && exit 0; sleep 0.05; done; exit 1"}})
    gate = cluster.state_dir / "jobs" / blocker / "go"
    wait_for_state(blocker, "test")

    low = [submit_job({"job_queue": queue, "job_priority": 0}) for _ in range(2)]
    high = submit_job({"job_queue": queue, "job_priority": 100})
    assert {job_status(j) for j in [*low, high]} == {"waiting"}
    gate.touch()

    assert_passed([blocker, *low, high])
    started = {j: holds(j)[0].assigned for j in [blocker, *low, high]}
    assert sorted(started, key=started.__getitem__) == [blocker, high, *low]
    assert_held_only_while_running([h for j in [blocker, *low, high] for h in holds(j)])
