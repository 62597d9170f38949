"""The pure allocator on small tables of plain data (labgrid's test_sched style).

A device is written ``dev("a", "x y")``: device ``a`` serving queues ``x`` and ``y``; a job
``job("j1", "x x", t=1)``: two requirements of queue ``x``, submitted at 1. The expected
result is ``{job id: {requirement index: device}}`` of the jobs that start now.
"""
from __future__ import annotations

import pytest

from convoy.coordinator.scheduling.allocator import allocate, explain, feasible, ordered
from convoy.coordinator.scheduling.feasibility import ordinal
from convoy.coordinator.scheduling.matching import Deficit, deficits, max_matching
from convoy.coordinator.scheduling.model import (
    Device,
    Health,
    Requirement,
    WaitingJob,
    lava_priority,
)


def dev(name: str, queues: str = "", health: str = "idle", device_type: str | None = None,
        tags: str = "") -> Device:
    return Device(name, frozenset(queues.split()), device_type, frozenset(tags.split()), Health(health))


def job(job_id: str, queues: str, t: float = 0.0, priority: int = 0, exclude: str = "") -> WaitingJob:
    reqs = tuple(Requirement(queue=q, exclude=frozenset(exclude.split()), label=f"provision_data.jobs[{i}]")
                 for i, q in enumerate(queues.split()))
    return WaitingJob(job_id, reqs, priority, t)


def role(name: str, device_type: str, tags: str = "", count: int = 1) -> list[Requirement]:
    return [Requirement(device_type=device_type, tags=frozenset(tags.split()), label=f"role {name}")] * count


def lava(job_id: str, *roles: list[Requirement], t: float = 0.0, priority: int = 0) -> WaitingJob:
    return WaitingJob(job_id, tuple(r for rs in roles for r in rs), priority, t)


def started(jobs: list[WaitingJob], devices: list[Device]) -> dict[str, dict[int, str]]:
    return {a.job_id: dict(a.devices) for a in allocate(jobs, devices)}


# ------------------------------------------------------------------ allocate
ALLOCATE = {
    "one job, one idle device": (
        [dev("a", "x")], [job("j1", "x")], {"j1": {0: "a"}}),
    "nothing idle: nothing starts": (
        [dev("a", "x", "busy")], [job("j1", "x")], {}),
    "only idle devices are given": (
        [dev("a", "x", "assigned"), dev("b", "x", "offline"), dev("c", "x", "maintenance"), dev("d", "x")],
        [job("j1", "x")], {"j1": {0: "d"}}),
    "all or nothing: one of two idle, nothing held": (
        [dev("a", "x"), dev("b", "x", "busy")], [job("j1", "x x")], {}),
    "a multi job gets distinct devices": (
        [dev("a", "x"), dev("b", "x")], [job("j1", "x x")], {"j1": {0: "a", 1: "b"}}),
    "matching needs an augmenting path (greedy would give a to x)": (
        [dev("a", "x y"), dev("b", "x z")], [job("j1", "x y")], {"j1": {0: "b", 1: "a"}}),
    "a device is never given twice": (
        [dev("a", "x")], [job("j1", "x", t=1), job("j2", "x", t=2)], {"j1": {0: "a"}}),
    "first come first served within a priority": (
        [dev("a", "x")], [job("j2", "x", t=2), job("j1", "x", t=1)], {"j1": {0: "a"}}),
    "equal submit times: job id decides": (
        [dev("a", "x")], [job("jb", "x", t=1), job("ja", "x", t=1)], {"ja": {0: "a"}}),
    "higher priority first, even when younger": (
        [dev("a", "x")], [job("old", "x", t=1), job("urgent", "x", t=2, priority=200)], {"urgent": {0: "a"}}),
    "backfill on devices the blocked head cannot use": (
        [dev("a", "x", "busy"), dev("b", "y")], [job("head", "x", t=1), job("small", "y", t=2)],
        {"small": {0: "b"}}),
    "no backfill on an idle device the blocked head needs": (
        [dev("a", "x"), dev("b", "x", "busy")], [job("head", "x x", t=1), job("small", "x", t=2)], {}),
    "a device serving two queues is held for the head through either": (
        [dev("a", "x", "busy"), dev("b", "x y")], [job("head", "x x", t=1), job("small", "y", t=2)], {}),
    "the head holds busy devices too: a younger job waits for the one the head will get": (
        [dev("a", "x", "busy"), dev("b", "y")], [job("head", "x", t=1), job("small", "x", t=2),
                                                  job("other", "y", t=3)], {"other": {0: "b"}}),
    "the head holds offline devices' peers: it waits for the offline one, holding the idle one back": (
        [dev("a", "x", "offline"), dev("b", "x")], [job("head", "x x", t=1), job("small", "x", t=2)], {}),
    "an older job of lower priority holds nothing against a higher one": (
        [dev("a", "x"), dev("b", "x", "busy")],
        [job("low", "x x", t=1, priority=0), job("high", "x", t=2, priority=10)], {"high": {0: "a"}}),
    "a blocked higher-priority job holds against an older lower one": (
        [dev("a", "x"), dev("b", "x", "busy")],
        [job("low", "x", t=1, priority=0), job("high", "x x", t=2, priority=10)], {}),
    "a job the lab can never run holds nothing": (
        [dev("a", "x"), dev("b", "x")], [job("never", "x x x", t=1), job("small", "x", t=2)],
        {"small": {0: "a"}}),
    "a job on an unknown queue holds nothing": (
        [dev("a", "x")], [job("never", "nope x", t=1), job("small", "x", t=2)], {"small": {0: "a"}}),
    "a started job takes devices, the next one takes the rest": (
        [dev("a", "x"), dev("b", "x"), dev("c", "x")], [job("j1", "x x", t=1), job("j2", "x x", t=2)],
        {"j1": {0: "a", 1: "b"}}),
    "the least versatile device is preferred, leaving the shared one": (
        [dev("a", "x y"), dev("b", "x")], [job("j1", "x", t=1), job("j2", "y", t=2)],
        {"j1": {0: "b"}, "j2": {0: "a"}}),
    "exclude_agents removes a candidate": (
        [dev("a", "x"), dev("b", "x")], [job("j1", "x", exclude="a")], {"j1": {0: "b"}}),
    "exclude_agents of every idle device: waits": (
        [dev("a", "x"), dev("b", "x", "busy")], [job("j1", "x", exclude="a")], {}),
    "LAVA: device_type and all tags select": (
        [dev("q1", device_type="qemu"), dev("q2", device_type="qemu", tags="usb"),
         dev("q3", device_type="qemu", tags="usb gpu")],
        [lava("m1", role("server", "qemu", "usb gpu"), role("client", "qemu", "usb"), role("any", "qemu"))],
        {"m1": {0: "q3", 1: "q2", 2: "q1"}}),
    "LAVA: a role's count needs that many devices": (
        [dev("q1", device_type="qemu"), dev("q2", device_type="qemu", health="busy")],
        [lava("m1", role("node", "qemu", count=2), t=1), lava("m2", role("node", "qemu"), t=2)], {}),
    "two jobs needing the same two devices in opposite order: one starts, the other waits": (
        [dev("a", "x"), dev("b", "y")], [job("j1", "x y", t=1), job("j2", "y x", t=1)],
        {"j1": {0: "a", 1: "b"}}),
}


@pytest.mark.parametrize("devices,jobs,expected", ALLOCATE.values(), ids=ALLOCATE.keys())
def test_allocate(devices: list[Device], jobs: list[WaitingJob], expected: dict[str, dict[int, str]]) -> None:
    assert started(jobs, devices) == expected


def test_assignments_come_in_scheduling_order() -> None:
    devices = [dev("a", "x"), dev("b", "y")]
    jobs = [job("late", "y", t=2), job("early", "x", t=1)]
    assert [a.job_id for a in allocate(jobs, devices)] == ["early", "late"]


def test_no_jobs_or_no_devices() -> None:
    assert allocate([], [dev("a", "x")]) == []
    assert allocate([job("j1", "x")], []) == []


def test_same_device_or_job_twice_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        allocate([], [dev("a", "x"), dev("a", "y")])
    with pytest.raises(ValueError, match="waiting twice"):
        allocate([job("j1", "x"), job("j1", "x")], [])


def test_ordered() -> None:
    jobs = [job("c", "x", t=3), job("b", "x", t=2, priority=5), job("a", "x", t=1), job("d", "x", t=0, priority=5)]
    assert [j.job_id for j in ordered(jobs)] == ["d", "b", "a", "c"]


# ------------------------------------------------------------------ model
def test_requirement_needs_a_queue_or_device_type() -> None:
    with pytest.raises(ValueError, match="neither a queue nor a device_type"):
        Requirement(label="provision_data.jobs[0]")


def test_waiting_job_checks() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        WaitingJob("j", (Requirement(queue="x"),), priority=-1)
    with pytest.raises(ValueError, match="no requirements"):
        WaitingJob("j", ())


@pytest.mark.parametrize("value,expected", [("high", 100), ("medium", 50), ("low", 0), ("HIGH", 100), (75, 75), (0, 0)])
def test_lava_priority(value: str | int, expected: int) -> None:
    assert lava_priority(value) == expected


@pytest.mark.parametrize("value", ["urgent", 101, -1, True])
def test_lava_priority_rejects(value: str | int) -> None:
    with pytest.raises(ValueError, match=r"high, medium, low or 0\.\.100"):
        lava_priority(value)


# ------------------------------------------------------------------ feasible
FEASIBLE = {
    "fits": (
        [dev("a", "x", "busy"), dev("b", "x", "offline")], job("j", "x x"), []),
    "maintenance devices count: the lab can run it later": (
        [dev("a", "x", "maintenance")], job("j", "x"), []),
    "two children on a one-device queue": (
        [dev("a", "rpi4b")], job("j", "rpi4b rpi4b"),
        ["provision_data.jobs[1]: needs a second device of queue 'rpi4b'; 1 registered"]),
    "three children on a one-device queue": (
        [dev("a", "x"), dev("b", "y")], job("j", "x y x x"),
        ["provision_data.jobs[2]: needs a second device of queue 'x'; 1 registered",
         "provision_data.jobs[3]: needs a third device of queue 'x'; 1 registered"]),
    "unknown queue": (
        [dev("a", "x")], job("j", "x nope"), ["provision_data.jobs[1]: no registered device of queue 'nope'"]),
    "every device excluded": (
        [dev("a", "x"), dev("b", "x")], job("j", "x", exclude="a b"),
        ["provision_data.jobs[0]: every device of queue 'x' is excluded ('a', 'b')"]),
    "exclusions leave too few": (
        [dev("a", "x"), dev("b", "x"), dev("c", "x")], job("j", "x x", exclude="a b"),
        ["provision_data.jobs[1]: needs a second device of queue 'x'; 3 registered, 1 of them not excluded"]),
    "two queues sharing their only device": (
        [dev("a", "x y")], job("j", "x y"),
        ["provision_data.jobs[1]: needs a device of queue 'y'; provision_data.jobs[0] (queue 'x'), "
         "provision_data.jobs[1] (queue 'y') need 2 devices among the same 1 ('a')"]),
    "LAVA: a tag no device of the type has names role and tag": (
        [dev("q1", device_type="qemu", tags="usb"), dev("b1", device_type="bbb", tags="gpu")],
        lava("m", role("server", "qemu"), role("client", "qemu", "usb gpu")),
        ["role client: no device of device_type 'qemu' has tag 'gpu'"]),
    "LAVA: tags each present, never together": (
        [dev("q1", device_type="qemu", tags="usb"), dev("q2", device_type="qemu", tags="gpu")],
        lava("m", role("client", "qemu", "usb gpu")),
        ["role client: no device of device_type 'qemu' has all of tags 'gpu', 'usb'"]),
    "LAVA: unknown device_type": (
        [dev("q1", device_type="qemu")], lava("m", role("server", "bbb")),
        ["role server: no registered device of device_type 'bbb'"]),
    "LAVA: a role's count beyond the devices": (
        [dev("q1", device_type="qemu", tags="usb"), dev("q2", device_type="qemu", tags="usb"),
         dev("q3", device_type="qemu")],
        lava("m", role("node", "qemu", "usb", count=3)),
        ["role node: needs a third device of device_type 'qemu' with tag 'usb'; 2 registered"]),
}


@pytest.mark.parametrize("devices,waiting,expected", FEASIBLE.values(), ids=FEASIBLE.keys())
def test_feasible(devices: list[Device], waiting: WaitingJob, expected: list[str]) -> None:
    assert feasible(waiting, devices) == expected


@pytest.mark.parametrize("n,word", [(1, "first"), (2, "second"), (10, "tenth"), (11, "11th"), (12, "12th"),
                                    (13, "13th"), (21, "21st"), (22, "22nd"), (23, "23rd"), (101, "101st")])
def test_ordinal(n: int, word: str) -> None:
    assert ordinal(n) == word


# ------------------------------------------------------------------ explain
LAB = [dev("a", "x"), dev("b", "x", "busy"), dev("c", "y", "offline"), dev("d", "z", "maintenance"),
       dev("e", "w")]
QUEUE = [job("head", "x x", t=1), job("j2", "x", t=2), job("j3", "y", t=3), job("j4", "w", t=4),
         job("j5", "z w", t=5), job("never", "x x x", t=6)]
EXPLAIN = {
    "head": "position 1 of 6; waits for provision_data.jobs[0], provision_data.jobs[1] (queue 'x'): "
            "needs 2 devices, 1 usable; 2 fit: 1 idle, 1 busy",
    "j2": "position 2 of 6; waits for provision_data.jobs[0] (queue 'x'): needs 1 device, 0 usable; "
          "2 fit: 1 idle held for older job head, 1 busy",
    "j3": "position 3 of 6; waits for provision_data.jobs[0] (queue 'y'): needs 1 device, 0 usable; 1 fit: 1 offline",
    "j4": "position 4 of 6; starts at the next scheduling pass",
    "j5": "position 5 of 6; waits for provision_data.jobs[0] (queue 'z'): needs 1 device, 0 usable; "
          "1 fit: 1 maintenance; provision_data.jobs[1] (queue 'w'): needs 1 device, 0 usable; 1 fit: 1 assigned",
    "never": "can never start: provision_data.jobs[2]: needs a third device of queue 'x'; 2 registered",
}


@pytest.mark.parametrize("job_id,expected", EXPLAIN.items(), ids=EXPLAIN.keys())
def test_explain(job_id: str, expected: str) -> None:
    target = next(j for j in QUEUE if j.job_id == job_id)
    assert explain(target, LAB, QUEUE).message() == expected


def test_explain_structure() -> None:
    reason = explain(QUEUE[1], LAB, QUEUE)
    assert (reason.position, reason.waiting, reason.starts_now, reason.problems) == (2, 6, False, ())
    (short,) = reason.shortfalls
    assert short.held_for == ("head",)
    assert dict(short.devices) == {"idle": 0, "held": 1, "assigned": 0, "busy": 1, "offline": 0, "maintenance": 0}


def test_explain_adds_a_job_not_in_the_list() -> None:
    assert explain(job("new", "w", t=9), LAB, []).message() == "position 1 of 1; starts at the next scheduling pass"


def test_explain_agrees_with_allocate() -> None:
    starting = {a.job_id for a in allocate(QUEUE, LAB)}
    assert starting == {j.job_id for j in QUEUE if explain(j, LAB, QUEUE).starts_now} == {"j4"}


# ------------------------------------------------------------------ matching
MATCHING = {
    "empty": ([], 0),
    "one each": ([["a"], ["b"]], 2),
    "contention": ([["a"], ["a"]], 1),
    "augmenting chain": ([["a", "b"], ["a"], ["b", "c"]], 3),
    "long chain": ([["d1", "d2"], ["d2", "d3"], ["d3", "d4"], ["d1"]], 4),
    "Hall violator": ([["a", "b"], ["a", "b"], ["a", "b"], ["c"]], 3),
    "no candidates": ([[], ["a"]], 1),
}


@pytest.mark.parametrize("candidates,size", MATCHING.values(), ids=MATCHING.keys())
def test_max_matching(candidates: list[list[str]], size: int) -> None:
    matching = max_matching(candidates)
    assert len(matching) == size
    assert len(set(matching.values())) == size
    assert all(d in candidates[r] for r, d in matching.items())


def test_deficits_name_the_hall_violators() -> None:
    candidates = [["a", "b"], ["a", "b"], ["c"], ["a", "b"], [], ["c"]]
    assert deficits(candidates, max_matching(candidates)) == [
        Deficit((0, 1, 3), ("a", "b")), Deficit((2, 5), ("c",)), Deficit((4,), ())]


def test_deficits_of_a_full_matching_are_none() -> None:
    candidates = [["a", "b"], ["a"]]
    assert deficits(candidates, max_matching(candidates)) == []
