"""Whether the lab can ever run a job, and if not, what is missing, in the user's words.

Checked at submission against every registered device whatever its health (a busy,
offline or maintenance device may serve the job later): a job is satisfiable when a
matching gives each requirement its own device. When none does, Hall's condition names
the culprits: a requirement nothing fits (an unknown queue, a tag no device of the type
has, every fitting device excluded), or a group of requirements with fewer fitting
devices than members ("provision_data.jobs[1]: needs a second device of queue 'rpi4b';
1 registered").
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .index import DeviceIndex
from .matching import Deficit, deficits, max_matching
from .model import Device, Requirement, WaitingJob, quoted

_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]


def feasible(job: WaitingJob, devices: Iterable[Device]) -> list[str]:
    """The reasons the registered devices can never run ``job``; empty when they can."""
    return problems(job, DeviceIndex(devices))


def problems(job: WaitingJob, index: DeviceIndex) -> list[str]:
    """:func:`feasible` on an index already built."""
    reqs = job.requirements
    candidates = [index.fitting(r) for r in reqs]
    matching = max_matching(candidates)
    if len(matching) == len(reqs):
        return []
    out = [_nothing_fits(label(job, i), r, index) for i, r in enumerate(reqs) if not candidates[i]]
    for deficit in deficits(candidates, matching):
        if deficit.devices:  # requirements nothing fits are reported above
            out.extend(_too_few(job, deficit, index))
    return out


def label(job: WaitingJob, i: int) -> str:
    """The requirement's label, or its position when it has none."""
    return job.requirements[i].label or f"requirements[{i}]"


def ordinal(n: int) -> str:
    """``second`` for 2; ``11th``, ``22nd`` past ten."""
    if 1 <= n <= len(_ORDINALS):
        return _ORDINALS[n - 1]
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _nothing_fits(where: str, req: Requirement, index: DeviceIndex) -> str:
    base = replace(req, tags=frozenset(), exclude=frozenset())
    pool = [d for d in index.pool(req) if base.fits(d)]
    if not pool:
        return f"{where}: no registered device of {base.describe()}"
    tagged = [d for d in pool if req.tags <= d.tags]
    if not tagged:
        missing = req.tags - frozenset().union(*(d.tags for d in pool))
        if missing:
            word = "tag" if len(missing) == 1 else "tags"
            return f"{where}: no device of {base.describe()} has {word} {quoted(missing)}"
        return f"{where}: no device of {base.describe()} has all of tags {quoted(req.tags)}"
    names = [d.name for d in tagged]
    return f"{where}: every device of {req.describe()} is excluded ({quoted(names)})"


def _too_few(job: WaitingJob, deficit: Deficit, index: DeviceIndex) -> list[str]:
    """One message per requirement past the group's devices: the first ones take them."""
    members = [job.requirements[i] for i in deficit.requirements]
    have = len(deficit.devices)
    short = deficit.requirements[have:]
    descriptions = {r.describe() for r in members}
    if len(descriptions) == 1:
        desc = members[0].describe()
        registered = f"{have} registered"
        unexcluded = {n for r in members for n in index.fitting(replace(r, exclude=frozenset()))}
        if len(unexcluded) > have:
            registered = f"{len(unexcluded)} registered, {have} of them not excluded"
        return [f"{label(job, i)}: needs a {ordinal(have + k + 1)} device of {desc}; {registered}"
                for k, i in enumerate(short)]
    others = ", ".join(f"{label(job, i)} ({job.requirements[i].describe()})" for i in deficit.requirements)
    return [f"{label(job, i)}: needs a device of {job.requirements[i].describe()}; {others} "
            f"need {len(deficit.requirements)} devices among the same {have} ({quoted(deficit.devices)})"
            for i in short]
