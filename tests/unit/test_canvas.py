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


# --- a single-device job: one task on its assigned device's own queue ---------------------------
def test_single_job_is_one_task_on_its_devices_queue(app):
    assert shape(canvas.single_job(app, "j1", "rpi-3")) == (
        canvas.RUN_JOB, ("j1",), {"queue": "convoy.device.rpi-3", "task_id": "j1", "ignore_result": True})


# --- a multi job: a chord, one child per assigned device on that device's queue, then the parent -
def test_multi_job_header_has_one_child_task_per_assigned_device(app):
    sig = canvas.multi_job(app, PARENT, {"c1": "srv-1", "c3": "cli-2"}, SETTINGS)
    assert sig.task == "celery.chord"
    # in the order given (provision_data.jobs order; a secondary connection, c2, has no device and no task),
    # no priority: the scheduler decides the order, not the broker
    assert [shape(child) for child in sig.tasks] == [
        (canvas.CHILD_JOB, ("c1",), {"queue": "convoy.device.srv-1", "task_id": "c1", "ignore_result": True}),
        (canvas.CHILD_JOB, ("c3",), {"queue": "convoy.device.cli-2", "task_id": "c3", "ignore_result": True}),
    ]


def test_a_child_sent_again_keeps_its_chord_membership(app):
    part = {"group_id": "g1", "group_index": 1, "chord": {"task": "convoy.parent.collect"}}
    name, args, options = shape(canvas.child_again(app, "c3", "cli-9", part))
    assert (name, args) == (canvas.CHILD_JOB, ("c3",))
    assert options["queue"] == "convoy.device.cli-9" and options["task_id"] == "c3"
    assert (options["group_id"], options["group_index"], options["chord"]) == ("g1", 1, part["chord"])


def test_chord_body_is_collect_on_the_coordinator(app):
    body = canvas.multi_job(app, PARENT, {"c1": "d1", "c2": "d2"}, SETTINGS).body
    assert body == canvas.parent_body(app, PARENT, SETTINGS)
    # collect receives the header's results (the children's allocation reports); later steps are sent one by one
    assert shape(body) == (canvas.COLLECT, (PARENT,), {"queue": "coord", "task_id": "p1.collect",
                                                      "ignore_result": True})


@pytest.mark.parametrize("step, task, args", [
    # a collect sent by a repair has no allocation reports: None in their place, it reads the store
    ("collect", canvas.COLLECT, (None, PARENT)),
    ("reserve", canvas.RESERVE, (PARENT,)),
    ("test", canvas.TEST, (PARENT,)),
    ("cleanup", canvas.CLEANUP, (PARENT,)),
])
def test_each_parent_step_goes_to_the_coordinator_under_the_parents_id(app, step, task, args):
    assert shape(canvas.parent_step(app, PARENT, step, SETTINGS)) == (
        task, args, {"queue": "coord", "task_id": f"p1.{step}", "ignore_result": True})


def test_the_canvas_travels_as_json(app):
    """Messages are JSON only (never pickle): the whole chord must survive a JSON round trip."""
    sig = canvas.multi_job(app, PARENT, {"c1": "d1", "c3": "d3"}, SETTINGS)
    back = Signature.from_dict(json.loads(json.dumps(sig)), app=app)
    assert back.task == "celery.chord"
    assert [shape(child) for child in back.tasks] == [shape(child) for child in sig.tasks]
    assert shape(back.body) == shape(sig.body)


def test_every_task_name_the_canvas_uses_is_registered():
    """The canvas builds signatures by name; each name is a task of convoy's app."""
    import convoy.tasks.device
    import convoy.tasks.parent  # noqa: F401  (registers the tasks)
    from convoy.tasks.celery import app as convoy_app

    names = {canvas.RUN_JOB, canvas.CHILD_JOB, canvas.COLLECT, canvas.RESERVE, canvas.TEST, canvas.CLEANUP}
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
