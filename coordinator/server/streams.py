"""What the server's fronts read off a job's event stream (pure: no Redis)."""
from __future__ import annotations


def event_time(event_id: str) -> float:
    """When a Redis stream entry was added (epoch seconds): its id is ``<milliseconds>-<sequence>``
    (0.0 for an id that is not one)."""
    try:
        return int(event_id.split("-", 1)[0]) / 1000
    except ValueError:
        return 0.0
