"""convoy: multi-device test jobs on Celery.

The public Python API lives in :mod:`convoy.coordinator.api`; it is imported
lazily so that small processes (the MultiNode commands) never pay for Celery.
"""
from __future__ import annotations

__all__ = ["submit_job", "job_status", "job_results", "cancel_job", "wait_for_job", "ConvoyError"]
__version__ = "0.1.0"

from convoy.errors import ConvoyError  # noqa: E402  (cheap: no third-party imports)


def __getattr__(name: str) -> object:
    if name in {"submit_job", "job_status", "job_results", "cancel_job", "wait_for_job"}:
        from convoy.coordinator import api

        return getattr(api, name)
    raise AttributeError(name)
