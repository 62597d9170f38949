"""The allocator's plain data: devices, what a job asks of them, waiting jobs, assignments.

Frozen values with no behaviour beyond "does this device fit this requirement", so the
allocator can be tested on small tables and the loop that feeds it (Redis, events) stays
elsewhere.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from convoy.config.devices import Health
from convoy.config.lava.translate import LAVA_PRIORITIES, lava_priority

__all__ = [
    "LAVA_PRIORITIES",
    "Assignment",
    "Device",
    "Health",
    "Requirement",
    "WaitingJob",
    "lava_priority",
    "quoted",
]


@dataclass(frozen=True)
class Device:
    """One registered device: the queues (pools) it serves, its LAVA ``device_type`` and ``tags``."""

    name: str
    queues: frozenset[str] = frozenset()
    device_type: str | None = None
    tags: frozenset[str] = frozenset()
    health: Health = Health.IDLE


@dataclass(frozen=True)
class Requirement:
    """One device a job needs.

    Either a Testflinger ``queue`` (a device serving it), or a LAVA ``device_type`` with
    ``tags`` (all required); ``exclude`` names devices that may not serve it (Testflinger's
    ``exclude_agents``). ``label`` says where in the job it comes from, for messages
    (``provision_data.jobs[1]``, ``role server``).
    """

    queue: str | None = None
    device_type: str | None = None
    tags: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    label: str = ""

    def __post_init__(self) -> None:
        if self.queue is None and self.device_type is None:
            raise ValueError(f"requirement {self.label!r} names neither a queue nor a device_type")

    @property
    def key(self) -> tuple[str | None, str | None, frozenset[str], frozenset[str]]:
        """What selects devices (the label aside): equal keys have equal candidates."""
        return (self.queue, self.device_type, self.tags, self.exclude)

    def fits(self, device: Device) -> bool:
        """Whether ``device`` could serve this requirement, whatever its health."""
        return ((self.queue is None or self.queue in device.queues)
                and (self.device_type is None or self.device_type == device.device_type)
                and self.tags <= device.tags
                and device.name not in self.exclude)

    def describe(self) -> str:
        """``queue 'rpi4b'`` or ``device_type 'qemu' with tags 'a', 'b'`` (for messages)."""
        parts = []
        if self.queue is not None:
            parts.append(f"queue {self.queue!r}")
        if self.device_type is not None:
            parts.append(f"device_type {self.device_type!r}")
        text = " and ".join(parts)
        if self.tags:
            text += f" with {_plural(len(self.tags), 'tag')} {quoted(self.tags)}"
        return text


@dataclass(frozen=True)
class WaitingJob:
    """A job waiting for devices: its requirements (its children; one for a single-device job).

    ``priority`` is Testflinger's ``job_priority`` (a non-negative integer, higher first);
    ``submitted`` orders jobs of one priority, first come first served.
    """

    job_id: str
    requirements: tuple[Requirement, ...]
    priority: int = 0
    submitted: float = 0.0

    def __post_init__(self) -> None:
        if self.priority < 0:
            raise ValueError(f"job {self.job_id}: priority must be non-negative, got {self.priority}")
        if not self.requirements:
            raise ValueError(f"job {self.job_id}: no requirements")

    @property
    def order(self) -> tuple[int, float, str]:
        """Sort key of the scheduling order: higher priority first, then older first."""
        return (-self.priority, self.submitted, self.job_id)


@dataclass(frozen=True)
class Assignment:
    """A job that starts now: requirement index → the device that serves it."""

    job_id: str
    devices: Mapping[int, str] = field(default_factory=dict)


def quoted(names: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> str:
    """``'a', 'b'`` sorted: names in messages."""
    return ", ".join(repr(n) for n in sorted(names))


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
