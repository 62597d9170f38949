"""Getting a phase's output into the job store through Redis outages, never losing it silently.

A test script's output comes through a pipe that must always be read: a
script that fills the pipe's buffer stops until someone reads it.  Sending
that output to Redis can fail for a while (Redis restarted, a network cut),
so reading and sending are kept apart: :class:`OutputForwarder` takes text
without ever blocking, keeps it in a bounded buffer and delivers it in order
from a thread of its own, retrying with backoff until the store answers
again.  What cannot be kept (the buffer is full, or the store stays away
past a grace period after the output ended) is counted and said in the
output itself, where the loss happened: ``*** N bytes of output lost: … ***``.

Short messages written by a task (``provisioning …``) need no buffer: the
task waits for the store (:func:`patient_writer`), as it must for its next
state change anyway.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from tenacity import RetryCallState
from tenacity.wait import wait_base

from convoy.coordinator.state.connection import CONNECTION_ERRORS
from convoy.retry import BACKOFF, retry_call, retrying

if TYPE_CHECKING:
    from convoy.coordinator.state.jobs import JobStore

log = logging.getLogger(__name__)

#: errors after which the same call succeeds once Redis is back (BusyLoadingError is a ConnectionError)
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = CONNECTION_ERRORS
#: output held in memory per phase while the store is unreachable
MAX_BUFFER_BYTES = 8 * 1024 * 1024
#: at most this much buffered output goes to the store in one call
BATCH_BYTES = 256 * 1024
#: how long the end of a phase waits for the store to take the output still buffered
GRACE_SECONDS = 60.0
#: how long a task's message waits for the store before its error is raised
MESSAGE_PATIENCE_SECONDS = 30.0
#: a join of the sender past its grace covers one last store call in flight (bounded by socket timeouts)
SENDER_JOIN_SLACK_SECONDS = 120.0

T = TypeVar("T")


def lost_notice(lost_bytes: int, reason: str) -> str:
    """The line that stands where output was lost."""
    return f"\n*** {lost_bytes} bytes of output lost: {reason} ***\n"


def patiently(call: Callable[..., T], *args: Any, patience: float = MESSAGE_PATIENCE_SECONDS,
              **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried with backoff while Redis is unreachable, for up to ``patience`` s.

    For store calls at the end of a phase (``end_phase``, ``transition``): a
    Redis restart then delays the task instead of crashing it.  Other errors
    and the last transient one are raised.
    """
    return retry_call(call, *args, errors=TRANSIENT_ERRORS, patience=patience, what="job store unreachable",
                      **kwargs)


def patient_writer(store: "JobStore", job_id: str, phase: str,
                   patience: float = MESSAGE_PATIENCE_SECONDS) -> Callable[[str], None]:
    """A writer of whole lines to a phase's output that waits out a short Redis outage."""
    def write(text: str) -> None:
        patiently(store.append_output, job_id, phase, text if text.endswith("\n") else text + "\n",
                  patience=patience)

    return write


class _Chunk:
    """Buffered text, and the bytes lost just before it (said in a notice ahead of it)."""

    __slots__ = ("text", "size", "lost_before", "why")

    def __init__(self, text: str, size: int, lost_before: int = 0, why: str = "") -> None:
        self.text = text
        self.size = size
        self.lost_before = lost_before
        self.why = why

    def render(self) -> str:
        return (lost_notice(self.lost_before, self.why) if self.lost_before else "") + self.text


class OutputForwarder:
    """Delivers text to ``sink`` in order from a thread of its own; ``write`` never waits for the sink.

    Errors in ``transient`` are retried with backoff for as long as the
    forwarder is open and for ``grace`` seconds after :meth:`close`; any
    other error loses the text of that one call (said in a notice).  At most
    ``max_buffer_bytes`` wait for the sink; text written beyond that is
    counted and replaced by a notice.  ``sink`` must return or raise in
    bounded time (a Redis call with socket timeouts does).
    """

    def __init__(self, sink: Callable[[str], None], *, max_buffer_bytes: int = MAX_BUFFER_BYTES,
                 batch_bytes: int = BATCH_BYTES, wait: wait_base = BACKOFF,
                 transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS, name: str = "output") -> None:
        self._sink = sink
        self._max_buffer_bytes = max_buffer_bytes
        self._batch_bytes = batch_bytes
        self._wait = wait
        self._transient = transient
        self.name = name
        self._chunks: deque[_Chunk] = deque()
        self._buffered = 0  #: bytes of text in _chunks
        self._gap = _Chunk("", 0)  #: bytes lost after the last buffered chunk, said before the next one
        self._lost = 0  #: every byte lost so far
        self._late = 0  #: bytes written after close (never delivered)
        self._deadline: float | None = None
        self._closing = False
        self._ended = False
        self._failures = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"output-{name}", daemon=True)
        self._thread.start()

    # --- the writer's side ---------------------------------------------------------
    def write(self, text: str) -> None:
        """Queue ``text`` for the sink; never blocks on the sink."""
        if not text:
            return
        size = len(text.encode("utf-8", errors="replace"))
        with self._cond:
            if self._closing:
                if not self._late:
                    log.warning("output %s: output after its end is not kept", self.name)
                self._late += size
                return
            if self._buffered + size > self._max_buffer_bytes:
                self._lose(size, f"the job store was unreachable while {self._max_buffer_bytes} bytes waited")
                return
            self._chunks.append(_Chunk(text, size, self._gap.lost_before, self._gap.why))
            self._gap = _Chunk("", 0)
            self._buffered += size
            self._cond.notify_all()

    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting for the sink now (never more than ``max_buffer_bytes``)."""
        with self._cond:
            return self._buffered

    @property
    def lost_bytes(self) -> int:
        with self._cond:
            return self._lost

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Block until everything written so far has left the buffer (delivered or lost); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._chunks and not self._gap.lost_before, timeout)

    def close(self, grace: float = GRACE_SECONDS) -> int:
        """Deliver what is buffered, waiting up to ``grace`` s for the sink; return the bytes lost."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + grace
                self._cond.notify_all()
        self._thread.join(grace + SENDER_JOIN_SLACK_SECONDS)
        with self._cond:
            if not self._ended:  # the sink hung past every bound: what waits for it is lost
                log.error("output %s: the sink did not return; %d bytes undelivered", self.name, self._buffered)
                self._lost += self._buffered
                self._ended = True
            return self._lost

    def __enter__(self) -> "OutputForwarder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the sender's side --------------------------------------------------------------
    def _lose(self, size: int, why: str) -> None:
        """Count ``size`` bytes lost after the buffered chunks (called with the lock held)."""
        self._lost += size
        self._gap.lost_before += size
        self._gap.why = self._gap.why or why
        self._cond.notify_all()  # an idle sender says it at once

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._gap.lost_before and not self._closing:
                    self._cond.wait()
                if not self._chunks and self._gap.lost_before:  # a loss at the end: its notice alone
                    self._chunks.append(self._gap)
                    self._gap = _Chunk("", 0)
                if not self._chunks:  # closing, and everything was delivered
                    self._ended = True
                    return
                batch = self._take_batch()
            try:
                self._deliver("".join(c.render() for c in batch))
            except self._transient as exc:  # raised only past the grace period: give up on the rest
                self._abandon(exc)
                return
            except Exception as exc:  # noqa: BLE001 - the sink is not trusted to keep this thread alive
                self._done_with(batch, failure=exc)
            else:
                self._done_with(batch)

    def _take_batch(self) -> list[_Chunk]:
        batch: list[_Chunk] = []
        size = 0
        for chunk in self._chunks:
            if batch and size + chunk.size > self._batch_bytes:
                break
            batch.append(chunk)
            size += chunk.size
        return batch

    def _done_with(self, batch: list[_Chunk], failure: Exception | None = None) -> None:
        size = sum(c.size for c in batch)
        with self._cond:
            for _ in batch:
                self._chunks.popleft()
            self._buffered -= size
            self._cond.notify_all()  # wait_drained
            if failure is None or not size:  # delivered, or a notice alone that failed: nothing more to say
                return
            log.error("output %s: the sink failed (%r); %d bytes of output lost", self.name, failure, size)
            self._lost += size
            lost = size + sum(c.lost_before for c in batch)
            why = f"the job store refused it ({type(failure).__name__})"
            if self._chunks:  # the next chunk says it, in its place
                self._chunks[0].lost_before += lost
                self._chunks[0].why = self._chunks[0].why or why
            else:
                self._gap.lost_before += lost
                self._gap.why = self._gap.why or why

    def _deliver(self, text: str) -> None:
        retrying(self._transient, give_up=self._past_deadline, on_retry=self._note_failure,
                 backoff=self._wait)(self._sink, text)
        if self._failures:
            log.warning("output %s: the store answers again after %d failed attempts", self.name, self._failures)
            self._failures = 0

    def _past_deadline(self) -> bool:
        with self._cond:
            return self._deadline is not None and time.monotonic() >= self._deadline

    def _note_failure(self, state: RetryCallState) -> None:
        self._failures += 1
        if self._failures == 1:
            error = state.outcome.exception() if state.outcome else None
            log.warning("output %s: the store is unreachable (%r); buffering and retrying", self.name, error)

    def _abandon(self, error: BaseException) -> None:
        with self._cond:
            unsaid = self._buffered + self._gap.lost_before + sum(c.lost_before for c in self._chunks)
            self._lost += self._buffered
            self._chunks.clear()
            self._buffered = 0
            self._gap = _Chunk("", 0)
            self._ended = True
        log.error("output %s: the store stayed unreachable (%r); %d bytes of output lost", self.name, error, unsaid)
        try:  # one last try, so that the output says it if the store is back right now
            self._sink(lost_notice(unsaid, "the job store stayed unreachable after the output ended"))
        except Exception:  # noqa: BLE001 - already logged above
            pass
