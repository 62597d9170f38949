"""What a job asks of the lab: one requirement per device it needs, read from its document.

A Testflinger job (or child) asks for one device serving its ``job_queue``,
none of its ``exclude_agents`` (a multi job's own list applies to every
child); a LAVA role asks for a device of its ``device_type`` having all its
``tags`` (the translation writes both on each of the role's children, one
per ``count``).  A secondary connection (a guest) needs no device.  Job
``tags`` of the Testflinger form are labels for finding jobs, not
requirements.
"""
from __future__ import annotations

from typing import Any

from convoy.config.jobs import is_guest, is_multi

from .model import Requirement, WaitingJob


def requirement(doc: dict[str, Any], label: str, exclude: frozenset[str] = frozenset()) -> Requirement:
    """The device one job (or child) document asks for."""
    excluded = exclude | frozenset(doc.get("exclude_agents") or ())
    if doc.get("device_type"):
        return Requirement(device_type=doc["device_type"], tags=frozenset(doc.get("tags") or ()),
                           exclude=excluded, label=label)
    return Requirement(queue=doc["job_queue"], exclude=excluded, label=label)


def requirements(job: dict[str, Any]) -> list[tuple[int | None, Requirement]]:
    """(child index or None for a single-device job, requirement) of each device the job needs, in order."""
    if not is_multi(job):
        return [(None, requirement(job, "role " + job["role"] if job.get("role") else "job_queue"))]
    exclude = frozenset(job.get("exclude_agents") or ())
    out: list[tuple[int | None, Requirement]] = []
    for i, child in enumerate(job["provision_data"]["jobs"]):
        if is_guest(child):
            continue
        label = f"role {child['role']}" if child.get("device_type") and child.get("role") \
            else f"provision_data.jobs[{i}]"
        out.append((i, requirement(child, label, exclude)))
    return out


def waiting_job(job_id: str, job: dict[str, Any], submitted: float) -> WaitingJob:
    """The job as the allocator sees it: its requirements, ``job_priority`` (0 if none) and submit time."""
    return WaitingJob(job_id, tuple(r for _, r in requirements(job)), priority=int(job.get("job_priority") or 0),
                      submitted=submitted)
