"""A job's results as users read them (``convoy results``, ``results.json``).

The shape follows Testflinger: ``<phase>_status`` (exit code) and
``<phase>_output`` per phase, plus convoy's ``job_state``, ``outcome`` and,
for a multi job, its children (each with its ``<phase>_status``).  LAVA's
results are ``test_results``, for the job and for each child: its suites in
the order they first reported, each ``{"name", "cases": [...]}``, the ``lava``
suite (MultiNode API calls of a group member, raised definitions) last.
"""
from __future__ import annotations

from typing import Any

from convoy.config.lifecycle import FINAL_STATES, Outcome
from convoy.config.testresults import suites
from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.testcases import cases_of


def outcome(record: dict[str, Any], phases: dict[str, dict[str, Any]]) -> str:
    """pass / fail / cancelled / running: what a user wants to know first."""
    state = record["state"]
    if record.get("outcome"):
        return record["outcome"]
    if state not in FINAL_STATES:
        return "running"
    if record.get("cancel_requested") and not record.get("parent_job_id"):
        return Outcome.CANCELLED
    if any(p.get("status", 0) != 0 for p in phases.values()) or record.get("message"):
        return Outcome.FAIL
    return Outcome.PASS


def job_results(store: JobStore, job_id: str) -> dict[str, Any]:
    record = store.get(job_id)
    phases = store.phases(job_id)
    results: dict[str, Any] = {
        "job_id": job_id,
        "job_state": record["state"],
        "outcome": outcome(record, phases),
        "job_queue": record["job_queue"],
    }
    for field in ("message", "parent_job_id", "role", "device_info", "device", "created_at", "updated_at"):
        if record.get(field):
            results[field] = record[field]
    for phase, data in phases.items():
        if "status" in data:
            results[f"{phase}_status"] = data["status"]
        results[f"{phase}_output"] = store.output(job_id, phase)
    from convoy.coordinator.multinode.group import api_calls

    children = store.children(job_id)
    recorded = cases_of(store.client, [job_id, *children])
    if children:
        ends = store.child_ends(children)
        verdict = store.verdict(job_id, ends, record) if record["state"] in FINAL_STATES else None
        why = {f.job_id: f.reason for f in verdict.failed_children} if verdict else {}
        calls = api_calls(store.client, job_id)
        results["test_results"] = suites(recorded[job_id])
        results["children"] = [
            _child_summary(store, child_id, why.get(child_id),
                           suites(recorded[child_id], [c for c in calls if c.get("job_id") == child_id]))
            for child_id in children]
        if verdict and verdict.reasons:
            results["reasons"] = list(verdict.reasons)
            results["failed_children"] = [{"job_id": f.job_id, "label": f.label, "reason": f.reason}
                                          for f in verdict.failed_children]
    elif record.get("parent_job_id"):  # a member: its own calls
        calls = [c for c in api_calls(store.client, record["parent_job_id"]) if c.get("job_id") == job_id]
        results["test_results"] = suites(recorded[job_id], calls)
    else:
        calls = []
        results["test_results"] = suites(recorded[job_id])
    if calls:
        results["multinode"] = calls
    return results


def _child_summary(store: JobStore, child_id: str, reason: str | None = None,
                   test_results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    record = store.get(child_id)
    phases = store.phases(child_id)
    summary: dict[str, Any] = {"job_id": child_id, "job_queue": record["job_queue"], "job_state": record["state"],
                               "outcome": outcome(record, phases)}
    for field in ("role", "device_info", "device"):
        if record.get(field):
            summary[field] = record[field]
    if reason:
        summary["reason"] = reason
    for phase, data in phases.items():
        if "status" in data:
            summary[f"{phase}_status"] = data["status"]
    summary["test_results"] = test_results or []
    return summary
