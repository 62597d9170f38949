"""A job's results as users read them (``convoy results``, ``results.json``).

The shape follows Testflinger: ``<phase>_status`` (exit code) and
``<phase>_output`` per phase, plus convoy's ``job_state``, ``outcome`` and,
for a multi job, its children.
"""
from __future__ import annotations

from typing import Any

from convoy.coordinator.outcome import ChildEnd, Verdict, multi_job_outcome
from convoy.coordinator.store import FINAL_STATES, JobStore


def outcome(record: dict[str, Any], phases: dict[str, dict[str, Any]]) -> str:
    """pass / fail / cancelled / running: what a user wants to know first."""
    state = record["state"]
    if record.get("outcome"):
        return record["outcome"]
    if state not in ("complete", "cancelled"):
        return "running"
    if record.get("cancel_requested") and not record.get("parent_job_id"):
        return "cancelled"
    if any(p.get("status", 0) != 0 for p in phases.values()) or record.get("message"):
        return "fail"
    return "pass"


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
    if children:
        ends = child_ends(store, children)
        verdict = multi_job_verdict(store, job_id, ends, record) if record["state"] in FINAL_STATES else None
        why = {f.job_id: f.reason for f in verdict.failed_children} if verdict else {}
        results["children"] = [_child_summary(store, child_id, why.get(child_id)) for child_id in children]
        if verdict and verdict.reasons:
            results["reasons"] = list(verdict.reasons)
            results["failed_children"] = [{"job_id": f.job_id, "label": f.label, "reason": f.reason}
                                          for f in verdict.failed_children]
        calls = api_calls(store.r, job_id)
    elif record.get("parent_job_id"):  # a member: its own calls
        calls = [c for c in api_calls(store.r, record["parent_job_id"]) if c.get("job_id") == job_id]
    else:
        calls = []
    if calls:
        results["multinode"] = calls
    return results


def _child_summary(store: JobStore, child_id: str, reason: str | None = None) -> dict[str, Any]:
    record = store.get(child_id)
    summary = {"job_id": child_id, "job_queue": record["job_queue"], "job_state": record["state"],
               "outcome": outcome(record, store.phases(child_id))}
    for field in ("role", "device_info", "device"):
        if record.get(field):
            summary[field] = record[field]
    if reason:
        summary["reason"] = reason
    return summary


def child_ends(store: JobStore, child_ids: list[str]) -> list[ChildEnd]:
    """How each child ended, read from its record and phases (the outcome's input)."""
    rows = store.fields(child_ids, "state", "outcome", "message", "cancel_reason", "role", "job_queue")
    return [ChildEnd(job_id=cid, label=row["role"] or row["job_queue"] or "", state=row["state"] or "",
                     outcome=row["outcome"] or "", message=row["message"] or "",
                     cancel_reason=row["cancel_reason"] or "", phases=store.phases(cid))
            for cid, row in zip(child_ids, rows)]


def multi_job_verdict(store: JobStore, parent_id: str, ends: list[ChildEnd],
                      record: dict[str, Any] | None = None) -> Verdict:
    """The parent's outcome and reasons from what the store holds now."""
    record = record if record is not None else store.get(parent_id)
    return multi_job_outcome(store.phases(parent_id), ends, cancelled=bool(record.get("cancel_requested")),
                             message=record.get("message") or "")
