"""``global_timeout``: a durable deadline fixed when a job's test first starts, kept across re-runs.

Testflinger stops a job's test commands once ``global_timeout`` has passed
(the reserve phase has its own timeout).  The script runner enforces it
where the script runs (a stop condition); the deadline itself is recorded
with the job and in the timer set, so a step re-run after its coordinator
died goes on counting from the first start instead of starting the clock
again, and the scheduler stops a test that outlived its deadline with
nobody enforcing it (a backstop, :data:`BACKSTOP_SECONDS` late).
"""
from __future__ import annotations

import time
from typing import Any

from convoy.coordinator.state.jobs import JobStore
from convoy.coordinator.state.timers import Timer, set_timer

#: how long after the deadline the scheduler steps in (the runner's own stop comes first)
BACKSTOP_SECONDS = 10.0


def test_deadline(store: JobStore, job_id: str, job: dict[str, Any]) -> float | None:
    """When the job's test must be over (epoch seconds); None without a ``global_timeout``."""
    seconds = job.get("global_timeout")
    if not seconds:
        return None
    at = store.fix_time(job_id, "global_deadline", time.time() + float(seconds))
    set_timer(store.client, Timer.GLOBAL, job_id, at + BACKSTOP_SECONDS)
    return at


def remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (at least a millisecond: an expired deadline stops at once)."""
    return None if deadline is None else max(0.001, deadline - time.time())
