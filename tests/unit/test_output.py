"""The output forwarder on plain data: order kept through sink failures, losses said, memory bounded."""
from __future__ import annotations

import threading

import redis
from tenacity import wait_fixed

from convoy.tasks.run.output import OutputForwarder, lost_notice

FAST = wait_fixed(0.001)  # the retry policy's timing is not under test here


class Sink:
    """Stands for the job store: fails with Redis connection errors while it is down."""

    def __init__(self, failures: int = 0, up: bool = True) -> None:
        self.failures_left = failures
        self.up = threading.Event()
        if up:
            self.up.set()
        self.calls = 0
        self.received: list[str] = []
        self.called = threading.Condition()

    def __call__(self, text: str) -> None:
        with self.called:
            self.calls += 1
            self.called.notify_all()
        if self.failures_left > 0:
            self.failures_left -= 1
            raise redis.ConnectionError("Connection refused")
        if not self.up.is_set():
            raise redis.ConnectionError("Connection refused")
        self.received.append(text)

    def wait_calls(self, n: int) -> None:
        with self.called:
            assert self.called.wait_for(lambda: self.calls >= n, timeout=10), f"sink called {self.calls} times"

    @property
    def text(self) -> str:
        return "".join(self.received)


def lines(first: int, last: int) -> list[str]:
    return [f"line {i:02d}\n" for i in range(first, last + 1)]


def test_a_sink_that_fails_then_recovers_gets_everything_in_order_once():
    sink = Sink(failures=5)
    forwarder = OutputForwarder(sink, wait=FAST)
    for line in lines(1, 200):
        forwarder.write(line)
    assert forwarder.close(grace=10) == 0
    assert sink.text == "".join(lines(1, 200))
    assert sink.failures_left == 0, "the sink's failures were retried"


def test_output_beyond_the_buffer_is_counted_and_said_where_it_was_lost():
    sink = Sink(up=False)
    forwarder = OutputForwarder(sink, max_buffer_bytes=100, wait=FAST)
    for line in lines(1, 20):  # 8 bytes each: 12 lines fit in 100 bytes
        forwarder.write(line)
    sink.wait_calls(2)  # the sender is retrying: nothing was taken out of the buffer
    assert forwarder.buffered_bytes == 96
    assert forwarder.lost_bytes == 64
    sink.up.set()
    assert forwarder.wait_drained(timeout=10)  # the buffer is free again
    forwarder.write("after the outage\n")
    assert forwarder.close(grace=10) == 64
    assert sink.text == "".join(lines(1, 12)) + lost_notice(
        64, "the job store was unreachable while 100 bytes waited") + "after the outage\n"


def test_a_sink_that_never_recovers_loses_everything_and_says_so_without_blocking_the_writer():
    sink = Sink(up=False)
    forwarder = OutputForwarder(sink, max_buffer_bytes=1000, wait=FAST)
    for line in lines(1, 99) * 10:  # 7,920 bytes, written while nothing is delivered
        forwarder.write(line)
    assert forwarder.buffered_bytes <= 1000
    assert forwarder.close(grace=0.05) == 7920
    assert sink.received == []


def test_a_loss_at_the_end_is_said_once_the_sink_answers():
    sink = Sink(up=False)
    forwarder = OutputForwarder(sink, max_buffer_bytes=16, wait=FAST)
    for line in lines(1, 3):
        forwarder.write(line)
    sink.wait_calls(1)
    sink.up.set()
    assert forwarder.close(grace=10) == 8
    assert sink.text == "".join(lines(1, 2)) + lost_notice(8, "the job store was unreachable while 16 bytes waited")


def test_a_refused_write_loses_only_its_own_text_and_says_so_in_its_place():
    received: list[str] = []
    seen = threading.Condition()

    def sink(text: str) -> None:
        with seen:
            seen.notify_all()
            if "bad" in text:
                received.append("<refused>")
                raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
            received.append(text)

    def wait_for(entry: str) -> None:
        with seen:
            assert seen.wait_for(lambda: entry in received, timeout=10)

    forwarder = OutputForwarder(sink, wait=FAST)
    forwarder.write("good 1\n")
    wait_for("good 1\n")
    forwarder.write("bad\n")
    wait_for("<refused>")
    forwarder.write("good 2\n")
    assert forwarder.close(grace=10) == 4
    assert "".join(received) == "good 1\n<refused>" + lost_notice(4, "the job store refused it (ResponseError)") \
        + "good 2\n"
