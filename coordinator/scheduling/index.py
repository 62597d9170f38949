"""Devices indexed by queue and device_type, so a requirement's candidates are cheap to find.

Candidates come in order of preference: devices that serve fewer queues (and carry fewer
tags) first, so a job takes the least sought-after device that fits and leaves the
versatile ones to others; the name breaks ties, so every decision is reproducible.
"""
from __future__ import annotations

from collections.abc import Iterable

from .matching import max_matching
from .model import Device, Health, Requirement, WaitingJob

_Key = tuple[str | None, str | None, frozenset[str], frozenset[str]]


def _preference(device: Device) -> tuple[int, int, str]:
    return (len(device.queues), len(device.tags), device.name)


class DeviceIndex:
    """The registered devices of one scheduling pass (whatever their health), indexed."""

    def __init__(self, devices: Iterable[Device]) -> None:
        self.devices: dict[str, Device] = {}
        for device in devices:
            if device.name in self.devices:
                raise ValueError(f"device {device.name!r} registered twice")
            self.devices[device.name] = device
        self.by_queue: dict[str, list[Device]] = {}
        self.by_type: dict[str, list[Device]] = {}
        for device in sorted(self.devices.values(), key=_preference):
            for queue in device.queues:
                self.by_queue.setdefault(queue, []).append(device)
            if device.device_type is not None:
                self.by_type.setdefault(device.device_type, []).append(device)
        self.idle = frozenset(d.name for d in self.devices.values() if d.health == Health.IDLE)
        self._fitting: dict[_Key, tuple[str, ...]] = {}
        self._fitting_set: dict[_Key, frozenset[str]] = {}
        self._satisfiable: dict[tuple[_Key, ...], bool] = {}

    def pool(self, requirement: Requirement) -> list[Device]:
        """The devices of the requirement's queue (or else device_type), before tags and exclusions."""
        if requirement.queue is not None:
            return self.by_queue.get(requirement.queue, [])
        assert requirement.device_type is not None
        return self.by_type.get(requirement.device_type, [])

    def fitting(self, requirement: Requirement) -> tuple[str, ...]:
        """Names of every device that could serve ``requirement`` (any health), preferred first."""
        key = requirement.key
        names = self._fitting.get(key)
        if names is None:
            names = tuple(d.name for d in self.pool(requirement) if requirement.fits(d))
            self._fitting[key] = names
            self._fitting_set[key] = frozenset(names)
        return names

    def fitting_set(self, requirement: Requirement) -> frozenset[str]:
        """:meth:`fitting` as a set."""
        self.fitting(requirement)
        return self._fitting_set[requirement.key]

    def satisfiable(self, job: WaitingJob) -> bool:
        """Whether the registered devices, all healthy, could serve every requirement at once."""
        key = tuple(r.key for r in job.requirements)
        known = self._satisfiable.get(key)
        if known is None:
            candidates = [self.fitting(r) for r in job.requirements]
            known = all(candidates) and len(max_matching(candidates)) == len(candidates)
            self._satisfiable[key] = known
        return known
