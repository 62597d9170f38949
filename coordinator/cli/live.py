"""The live view of a job: its phases, states and output, and its children's.

Used by ``convoy poll``, ``convoy submit --poll`` and ``convoy run``.  It
blocks on the jobs' event streams (``XREAD``, a second at a time, far below
the socket timeout), so output shows up as it is written and nothing is
fetched on a timer.  A lost connection (a Redis restart) is retried with
back-off until the view's deadline; the view goes on from the last event it
printed.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO, TypeVar

from convoy.config.lifecycle import FINAL_STATES
from convoy.coordinator.state.connection import reconnecting
from convoy.coordinator.state.jobs import JobStore


def job_labels(store: JobStore, job_id: str) -> dict[str, str]:
    """Short names for a job and its children: ``job``, ``server#1``, ``client#2`` ..."""
    labels = {job_id: "job"}
    for i, child_id in enumerate(store.children(job_id), start=1):
        record = store.get(child_id)
        labels[child_id] = f"{record.get('role') or record['job_queue']}#{i}"
    return labels


T = TypeVar("T")


class LiveView:
    """Prints a job's (and its children's) events as they arrive."""

    def __init__(self, store: JobStore, job_id: str, out: TextIO = sys.stdout, show_output: bool = True) -> None:
        self.store = store
        self.job_id = job_id
        self.out = out
        self.show_output = show_output
        self.labels = job_labels(store, job_id)
        self._partial: dict[tuple[str, str], str] = {}
        self._calls_seen = 0

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _render(self, job_id: str, fields: dict[str, str]) -> None:
        label = self.labels.get(job_id, job_id[:8])
        kind = fields.get("type")
        if kind == "state":
            self._write(f"[{label}] state: {fields.get('state')}")
        elif kind == "phase" and fields.get("event") == "end":
            self._write(f"[{label}] {fields.get('phase')} finished (exit {fields.get('status')})")
        elif kind == "output" and self.show_output:
            phase = fields.get("phase", "")
            text = self._partial.pop((job_id, phase), "") + fields.get("data", "")
            lines = text.split("\n")
            self._partial[(job_id, phase)] = lines.pop()
            for line in lines:
                self._write(f"[{label} {phase}] {line}")

    def _flush_partials(self) -> None:
        for (job_id, phase), rest in list(self._partial.items()):
            if rest:
                self._write(f"[{self.labels.get(job_id, job_id[:8])} {phase}] {rest}")
        self._partial.clear()

    def follow(self, timeout: float | None = None, on_tick: Callable[[], None] | None = None) -> str:
        """Print events until the job and all its children are final; return the job's state."""
        import time

        ids = list(self.labels)
        positions = {i: "0-0" for i in ids}  # the last event shown of each job
        deadline = None if timeout is None else time.monotonic() + timeout

        def retried(call: Callable[[], T]) -> T:
            return reconnecting(call, deadline=deadline, what="live view")

        while True:
            retried(lambda: self._read(positions, block_ms=1000))
            if on_tick:
                on_tick()
            if all(s in FINAL_STATES for s in retried(lambda: self.store.states(ids)).values()):
                retried(lambda: self._read(positions, block_ms=None))  # what came after the last read
                self._flush_partials()
                return retried(lambda: self.store.state(self.job_id))
            if deadline is not None and time.monotonic() > deadline:
                self._flush_partials()
                return retried(lambda: self.store.state(self.job_id))

    def _read(self, positions: dict[str, str], block_ms: int | None) -> None:
        for job_id, event_id, fields in self.store.read_events(positions, block_ms=block_ms):
            positions[job_id] = event_id
            self._render(job_id, fields)
        self._show_multinode_calls()

    def _show_multinode_calls(self) -> None:
        """The group's MultiNode API calls made since the last look (``multinode-sync-ready: pass``)."""
        if len(self.labels) < 2:
            return
        from convoy.coordinator.multinode.group import api_calls

        for call in api_calls(self.store.client, self.job_id, self._calls_seen):  # the store's pooled client
            self._calls_seen += 1
            label = self.labels.get(call.get("job_id", ""), str(call.get("job_id", ""))[:8])
            detail = f" ({call['detail']})" if call.get("detail") else ""
            self._write(f"[{label}] {call.get('name')}: {call.get('result')}{detail}")
