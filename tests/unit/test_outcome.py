"""A multi job's outcome: pass only if every phase of the parent and every child passed."""
from __future__ import annotations

import pytest

from convoy.config.outcome import ChildEnd, child_failure, multi_job_outcome

OK = {"status": 0}
PASSED = {"provision": OK, "allocate": OK, "test": OK, "cleanup": OK}


def released(job_id: str = "c1", label: str = "emu", **phases: dict) -> ChildEnd:
    """A child its parent released at the end: state cancelled, as every child ends."""
    return ChildEnd(job_id=job_id, label=label, state="cancelled", outcome="pass",
                    phases={"provision": OK, "cleanup": OK, **phases})


@pytest.mark.parametrize("child, reason", [
    (released(), None),
    (released(test=OK), None),
    (ChildEnd("c1", "emu", "cancelled", phases={"provision": OK, "cleanup": OK}), None),  # no outcome recorded
    (released(test={"status": 2}), "test failed (exit 2)"),
    (ChildEnd("c1", "emu", "cancelled", outcome="fail", message="device worker for emu-1 died during allocated",
              phases={"provision": OK, "cleanup": OK}), "device worker for emu-1 died during allocated"),
    (ChildEnd("c1", "emu", "cancelled", outcome="fail", message="device worker for emu-1 died during test",
              phases={"provision": OK, "test": {"status": 1}, "cleanup": OK}),
     "device worker for emu-1 died during test"),
    (ChildEnd("c1", "emu", "cancelled", outcome="fail", phases={"provision": {"status": 1}, "cleanup": OK},
              cancel_reason="parent job p: Unable to allocate all devices"), "provision failed (exit 1)"),
    (ChildEnd("c1", "emu", "cancelled", outcome="cancelled", message="parent job p ended before it started"),
     "cancelled: parent job p ended before it started"),
    (ChildEnd("c1", "emu", "cancelled", outcome="cancelled", message="cancelled by user"), "cancelled by user"),
    (ChildEnd("c1", "emu", "cancelled", outcome="fail", cancel_reason="cancelled by user",
              phases={"provision": OK, "test": {"status": 143}, "cleanup": OK}), "cancelled by user"),
    (ChildEnd("c1", "emu", "cancelled", outcome="cancelled", cancel_reason="cancelled by user",
              phases={"provision": OK, "cleanup": OK}), "cancelled by user"),
    (ChildEnd("c1", "emu", "cancelled", outcome="fail", phases={"provision": OK, "test": {"status": 143}}),
     "test stopped (exit 143)"),
    (ChildEnd("c1", "emu", "cancelled", outcome="fail", message="did not release in time",
              phases={"provision": OK}), "did not release in time"),
    (ChildEnd("c1", "emu", "cancelled", outcome="fail"), "failed"),
    (ChildEnd("c1", "emu", "test", phases={"provision": OK}), "did not end (still test)"),
])
def test_a_child_is_a_failure_only_when_its_record_or_phases_say_so(child, reason):
    assert child_failure(child) == reason


@pytest.mark.parametrize("parent, children, cancelled, message, outcome, reasons", [
    (PASSED, [released("a"), released("b")], False, "", "pass", ()),
    (PASSED, [], False, "", "pass", ()),
    ({**PASSED, "test": {"status": 1}}, [released("a")], False, "", "fail", ("test phase failed (exit 1)",)),
    (PASSED, [released("a"), ChildEnd("b", "server", "cancelled", outcome="fail",
                                      message="device worker for emu-2 died during allocated")],
     False, "", "fail", ("child b (server): device worker for emu-2 died during allocated",)),
    ({**PASSED, "test": {"status": 1}}, [released("a", "client", test={"status": 3}), released("b")],
     False, "", "fail", ("test phase failed (exit 1)", "child a (client): test failed (exit 3)")),
    ({"provision": {"status": 1}, "cleanup": OK},
     [ChildEnd("a", "emu", "cancelled", outcome="cancelled", message="parent job p ended before it started")],
     False, "Unable to allocate all devices", "fail",
     ("provision phase failed (exit 1)", "child a (emu): cancelled: parent job p ended before it started")),
    (PASSED, [], False, "Unable to allocate all devices", "fail", ()),
    ({**PASSED, "test": {"status": 143}}, [released("a")], True, "", "cancelled", ("test phase stopped (exit 143)",)),
    (PASSED, [released("a")], True, "", "cancelled", ()),
])
def test_a_multi_job_passes_only_if_the_parent_and_every_child_passed(parent, children, cancelled, message,
                                                                       outcome, reasons):
    verdict = multi_job_outcome(parent, children, cancelled=cancelled, message=message)
    assert verdict.outcome == outcome
    assert verdict.reasons == reasons


def test_failed_children_are_named_with_their_label_and_reason():
    dead = ChildEnd("b", "server", "cancelled", outcome="fail", message="device worker for emu-2 died during test",
                    phases={"test": {"status": 1}})
    verdict = multi_job_outcome(PASSED, [released("a", "client"), dead])
    assert [(f.job_id, f.label, f.reason) for f in verdict.failed_children] == [
        ("b", "server", "device worker for emu-2 died during test")]
