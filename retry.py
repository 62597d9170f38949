"""convoy's one retry policy: back off and try again while a service is briefly away.

Every layer that retries (a wait that outlives a Redis restart, output sent
while the job store is unreachable, a task's last state change) uses
:func:`retry_call` or :func:`retrying`, so they all back off alike: 0.1 s,
doubling, capped at 2 s, so a restarted Redis is used again within 2 s.
Which errors count as transient is the caller's to say (this module imports
no client library). The ``lava-*`` commands keep their own stdlib helper:
importing tenacity costs them more than the whole command may take.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypeVar

import tenacity

log = logging.getLogger(__name__)
T = TypeVar("T")

#: the first pause, and the longest one
BACKOFF_MIN_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 2.0
#: pauses between attempts: 0.1 s doubling up to 2 s
BACKOFF: tenacity.wait.wait_base = tenacity.wait_exponential(
    multiplier=BACKOFF_MIN_SECONDS, min=BACKOFF_MIN_SECONDS, max=BACKOFF_MAX_SECONDS)


def retrying(errors: tuple[type[BaseException], ...], *, deadline: float | None = None,
             patience: float | None = None, stop: threading.Event | None = None,
             give_up: Callable[[], bool] | None = None, what: str = "call",
             attempts: int | None = None, on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
             backoff: tenacity.wait.wait_base = BACKOFF) -> tenacity.Retrying:
    """A tenacity ``Retrying`` for ``errors`` with convoy's back-off.

    It gives up (re-raising the last error) at ``deadline`` (a
    ``time.monotonic()`` value), after ``patience`` seconds, after
    ``attempts`` tries, when ``stop`` is set, or when ``give_up()`` says so;
    with none of them it retries for ever.
    A pause never runs past the deadline, and a set ``stop`` ends it at once.
    ``on_retry`` replaces the default warning before each pause; ``backoff``
    replaces the pauses where a peer asks for its own (a key server's
    schedule) and in unit tests that must not wait.
    """
    if patience is not None:
        limit = time.monotonic() + patience
        deadline = limit if deadline is None else min(deadline, limit)

    def past_limit(_state: tenacity.RetryCallState) -> bool:
        return ((stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() >= deadline)
                or (attempts is not None and _state.attempt_number >= attempts)
                or (give_up is not None and give_up()))

    def pause(state: tenacity.RetryCallState) -> float:
        seconds = backoff(state)
        return seconds if deadline is None else max(0.0, min(seconds, deadline - time.monotonic()))

    def warn(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: %s; retrying (attempt %d)", what, exc, state.attempt_number)

    return tenacity.Retrying(retry=tenacity.retry_if_exception_type(errors), stop=past_limit, wait=pause,
                             sleep=stop.wait if stop is not None else time.sleep,
                             before_sleep=on_retry or warn, reraise=True)


def retry_call(call: Callable[..., T], *args: Any, errors: tuple[type[BaseException], ...],
               deadline: float | None = None, patience: float | None = None, attempts: int | None = None,
               stop: threading.Event | None = None, what: str = "call",
               backoff: tenacity.wait.wait_base = BACKOFF,
               on_retry: Callable[[tenacity.RetryCallState], None] | None = None, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried after ``errors`` as :func:`retrying` says.

    ``call`` must be safe to repeat (a read, a wait that re-checks its
    condition, an idempotent write). Any other error is raised at once.
    """
    return retrying(errors, deadline=deadline, patience=patience, attempts=attempts, stop=stop, what=what,
                    backoff=backoff, on_retry=on_retry)(call, *args, **kwargs)
