"""Following a job live, as data: its labels, then steps of new events, states and MultiNode calls.

One mechanism serves every reader: ``convoy poll`` and ``convoy run`` (``cli/live.py`` prints the steps),
``convoy server``'s ``GET /api/v1/jobs/{id}/live`` (one step per request, a long poll), and the CLI in
server mode (``coordinator/remote.py`` reads those steps over HTTP).  A step blocks on the jobs' event
streams (``XREAD``) for at most ``block_ms``: output arrives as it is written, nothing polls on a timer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from convoy.coordinator.state.jobs import JobStore


@dataclass
class LiveStep:
    """What happened since the positions a reader gave: each job's new events in order, every job's
    state now, and the group's MultiNode calls after the ones already seen."""

    events: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"events": [{"job_id": j, "id": e, "fields": f} for j, e, f in self.events],
                "states": self.states, "calls": self.calls}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LiveStep:
        return cls([(e["job_id"], e["id"], dict(e["fields"])) for e in data.get("events", [])],
                   dict(data.get("states", {})), list(data.get("calls", [])))


class LiveSource(Protocol):
    """Where a live view reads a job from: the job store, or ``convoy server``."""

    def labels(self, job_id: str) -> dict[str, str]: ...

    def step(self, job_id: str, positions: dict[str, str], calls_seen: int, block_ms: int | None) -> LiveStep: ...


def job_labels(store: JobStore, job_id: str) -> dict[str, str]:
    """Short names for a job and its children: ``job``, ``server#1``, ``client#2`` ..."""
    labels = {job_id: "job"}
    for i, child_id in enumerate(store.children(job_id), start=1):
        record = store.get(child_id)
        labels[child_id] = f"{record.get('role') or record['job_queue']}#{i}"
    return labels


class StoreSource:
    """Reads a job's live steps straight from the job store (lab side, and inside ``convoy server``)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def labels(self, job_id: str) -> dict[str, str]:
        return job_labels(self.store, job_id)

    def step(self, job_id: str, positions: dict[str, str], calls_seen: int, block_ms: int | None) -> LiveStep:
        """New events after ``positions`` (job id -> last event id seen, ``0-0`` from the start), blocking
        up to ``block_ms``; then the states of those jobs and the group's calls after ``calls_seen``."""
        events = self.store.read_events(positions, block_ms=block_ms)
        states = self.store.states(list(positions))
        calls: list[dict[str, Any]] = []
        if len(positions) > 1:
            from convoy.coordinator.multinode.group import api_calls

            calls = api_calls(self.store.client, job_id, calls_seen)
        return LiveStep(events, states, calls)
