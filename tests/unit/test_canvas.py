"""The Celery canvas of a job and job_list.json, as plain data: no broker, no Redis.

Building a signature touches no broker, so the canvas is checked on an app
with no configuration at all: which task, with which arguments, on which
queue, under which id, in which order.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from celery import Celery
from celery.canvas import Signature

from convoy.config.settings import Settings
from convoy.tasks import canvas

SETTINGS = Settings(coordinator_queue="coord")
PARENT = "p1"


@pytest.fixture
def app() -> Celery:
    return Celery("canvas-test", set_as_current=False)


def shape(sig: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """A signature as plain data: task name, arguments, options."""
    return sig.task, tuple(sig.args), dict(sig.options)


# --- a single-device job: one task on the job's queue -------------------------------------------
@pytest.mark.parametrize("job, options", [
    ({"job_queue": "rpi4b"}, {"queue": "rpi4b", "task_id": "j1", "ignore_result": True}),
    ({"job_queue": "rpi4b", "job_priority": 9}, {"queue": "rpi4b", "task_id": "j1", "priority": 9,
                                                 "ignore_result": True}),
])
def test_single_job_is_one_task_on_its_queue(app, job, options):
    assert shape(canvas.single_job(app, "j1", job)) == (canvas.RUN_JOB, ("j1",), options)


# --- a multi job: a chord, one child per device on the child's queue, then the parent's chain ----
SERVER = {"job_queue": "server-q", "role": "server"}
CLIENT = {"job_queue": "client-q", "role": "client"}
GUEST = {"role": "guest", "connection": "ssh", "host_role": "server"}


@pytest.mark.parametrize("children, parent_fields, header", [
    # one child task per device, in provision_data.jobs order, each on its own queue with its own id
    ([SERVER, CLIENT, CLIENT], {},
     [("c1", "server-q", None), ("c2", "client-q", None), ("c3", "client-q", None)]),
    # the parent's priority is every child's
    ([SERVER, CLIENT], {"job_priority": 3}, [("c1", "server-q", 3), ("c2", "client-q", 3)]),
    # a secondary connection holds no device: no task in the header
    ([SERVER, GUEST, CLIENT], {}, [("c1", "server-q", None), ("c3", "client-q", None)]),
])
def test_multi_job_header_has_one_child_task_per_device(app, children, parent_fields, header):
    job = {"job_queue": "multi", "provision_data": {"jobs": children}, **parent_fields}
    child_ids = [f"c{i}" for i in range(1, len(children) + 1)]
    sig = canvas.multi_job(app, PARENT, job, child_ids, SETTINGS)
    assert sig.task == "celery.chord"
    expected = []
    for child_id, queue, priority in header:
        options = {"queue": queue, "task_id": child_id, "ignore_result": True}
        if priority is not None:
            options["priority"] = priority
        expected.append((canvas.CHILD_JOB, (child_id,), options))
    assert [shape(child) for child in sig.tasks] == expected


def test_chord_body_is_collect_reserve_test_cleanup_on_the_coordinator(app):
    job = {"job_queue": "multi", "provision_data": {"jobs": [SERVER, CLIENT]}}
    body = canvas.multi_job(app, PARENT, job, ["c1", "c2"], SETTINGS).body
    assert body == canvas.parent_body(app, PARENT, SETTINGS)
    assert [(shape(step), step.immutable) for step in body.tasks] == [
        # collect receives the header's results (the children's allocation reports) ...
        ((canvas.COLLECT, (PARENT,), {"queue": "coord", "task_id": "p1.collect", "ignore_result": True}), False),
        # ... every later step only the parent's id
        ((canvas.RESERVE, (PARENT,), {"queue": "coord", "task_id": "p1.reserve", "ignore_result": True}), True),
        ((canvas.TEST, (PARENT,), {"queue": "coord", "task_id": "p1.test", "ignore_result": True}), True),
        ((canvas.CLEANUP, (PARENT,), {"queue": "coord", "task_id": "p1.cleanup", "ignore_result": True}), True),
    ]


def test_timeout_and_abort_cleanup_go_to_the_coordinator_under_their_own_ids(app):
    assert shape(canvas.allocation_timeout(app, PARENT, 7200.0, SETTINGS)) == (
        canvas.ALLOCATION_TIMEOUT, (PARENT,),
        {"queue": "coord", "countdown": 7200.0, "task_id": "p1.allocation-timeout", "ignore_result": True})
    # an aborted allocation queues cleanup directly; its id differs from the chained cleanup's
    assert shape(canvas.cleanup_now(app, PARENT, SETTINGS)) == (
        canvas.CLEANUP, (PARENT,), {"queue": "coord", "task_id": "p1.cleanup-abort", "ignore_result": True})


def test_the_canvas_travels_as_json(app):
    """Messages are JSON only (never pickle): the whole chord must survive a JSON round trip."""
    job = {"job_queue": "multi", "job_priority": 1, "provision_data": {"jobs": [SERVER, GUEST, CLIENT]}}
    sig = canvas.multi_job(app, PARENT, job, ["c1", "c2", "c3"], SETTINGS)
    back = Signature.from_dict(json.loads(json.dumps(sig)), app=app)
    assert back.task == "celery.chord"
    assert [shape(child) for child in back.tasks] == [shape(child) for child in sig.tasks]
    assert [(shape(step), step.immutable) for step in back.body.tasks] == \
        [(shape(step), step.immutable) for step in sig.body.tasks]


def test_every_task_name_the_canvas_uses_is_registered():
    """The canvas builds signatures by name; each name is a task of convoy's app."""
    import convoy.tasks.device
    import convoy.tasks.parent  # noqa: F401  (registers the tasks)
    from convoy.tasks.celery import app as convoy_app

    names = {canvas.RUN_JOB, canvas.CHILD_JOB, canvas.COLLECT, canvas.RESERVE, canvas.TEST, canvas.CLEANUP,
             canvas.ALLOCATION_TIMEOUT}
    assert names <= set(convoy_app.tasks)


# --- job_list.json: the chord's results, in provision_data.jobs order ---------------------------
def not_read() -> list[tuple[str, dict[str, Any]]]:
    raise AssertionError("the job store was read although the chord's results were complete")


def report(job_id: str, device_ip: str | None = None) -> dict[str, Any]:
    return {"job_id": job_id, "device_info": {"device_ip": device_ip} if device_ip else None}


STORED = [("c1", {"device_ip": "10.0.0.1"}), ("c2", {"device_ip": "10.0.0.2"})]
FROM_STORE = [{"job_id": "c1", "device_info": {"device_ip": "10.0.0.1"}},
              {"job_id": "c2", "device_info": {"device_ip": "10.0.0.2"}}]


@pytest.mark.parametrize("reports, stored, expected", [
    # the chord hands over the children's allocation reports, in header order
    ([report("c1", "10.0.0.1"), report("c2", "10.0.0.2")], not_read,
     [{"job_id": "c1", "device_info": {"device_ip": "10.0.0.1"}},
      {"job_id": "c2", "device_info": {"device_ip": "10.0.0.2"}}]),
    ([report("c2", "10.0.0.2"), report("c1", "10.0.0.1")], not_read,
     [{"job_id": "c2", "device_info": {"device_ip": "10.0.0.2"}},
      {"job_id": "c1", "device_info": {"device_ip": "10.0.0.1"}}]),
    # a device that reported no info gets an empty mapping, never null
    ([report("c1")], not_read, [{"job_id": "c1", "device_info": {}}]),
    # no device at all (only secondary connections): an empty list
    ([], not_read, []),
    # any result that is not an allocation report: the store's record, whole, never a partial file
    ([report("c1", "10.0.0.1"), None], lambda: STORED, FROM_STORE),
    ([report("c1", "10.0.0.1"), {"device_ip": "10.0.0.2"}], lambda: STORED, FROM_STORE),
    (["c1", "c2"], lambda: STORED, FROM_STORE),
])
def test_job_list(reports, stored, expected):
    assert canvas.job_list(reports, stored) == expected
