"""The live view of a job: its phases, states and output, and its children's.

Used by ``convoy poll``, ``convoy submit --poll`` and ``convoy run``.  It reads
steps from a :class:`~convoy.coordinator.follow.LiveSource` (the job store, or
``convoy server`` in server mode), each blocking on the jobs' event streams a
second at a time, so output shows up as it is written and nothing is fetched
on a timer.  A lost connection (a Redis restart) is retried with back-off until
the view's deadline; the view goes on from the last event it printed.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO, TypeVar

from convoy.config.lifecycle import FINAL_STATES
from convoy.coordinator.follow import LiveSource, LiveStep
from convoy.coordinator.state.connection import reconnecting

T = TypeVar("T")


class LiveView:
    """Prints a job's (and its children's) events as they arrive."""

    def __init__(self, source: LiveSource, job_id: str, out: TextIO = sys.stdout, show_output: bool = True) -> None:
        self.source = source
        self.job_id = job_id
        self.out = out
        self.show_output = show_output
        self.labels = source.labels(job_id)
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
        positions = {i: "0-0" for i in self.labels}  # the last event shown of each job
        deadline = None if timeout is None else time.monotonic() + timeout

        def retried(call: Callable[[], T]) -> T:
            return reconnecting(call, deadline=deadline, what="live view")

        while True:
            step = retried(lambda: self._step(positions, block_ms=1000))
            if on_tick:
                on_tick()
            if all(s in FINAL_STATES for s in step.states.values()):
                retried(lambda: self._step(positions, block_ms=None))  # what came after the last read
                self._flush_partials()
                return step.states[self.job_id]
            if deadline is not None and time.monotonic() > deadline:
                self._flush_partials()
                return step.states[self.job_id]

    def _step(self, positions: dict[str, str], block_ms: int | None) -> LiveStep:
        step = self.source.step(self.job_id, positions, self._calls_seen, block_ms)
        for job_id, event_id, fields in step.events:
            positions[job_id] = event_id
            self._render(job_id, fields)
        for call in step.calls:  # the group's MultiNode API calls (``multinode-sync-ready: pass``)
            self._calls_seen += 1
            label = self.labels.get(call.get("job_id", ""), str(call.get("job_id", ""))[:8])
            detail = f" ({call['detail']})" if call.get("detail") else ""
            self._write(f"[{label}] {call.get('name')}: {call.get('result')}{detail}")
        return step
