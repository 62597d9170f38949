"""Bipartite matching of a job's requirements to devices, and why a matching falls short.

A job is all or nothing: it starts only if every requirement gets its own device. Whether
that is possible is a maximum bipartite matching (Hopcroft-Karp: a job has few
requirements, a requirement may have hundreds of candidates). When the maximum falls
short, Hall's condition names the culprits: a group of requirements whose candidate
devices are fewer than the group.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_DEAD = -2  # a requirement that cannot reach a free device in this phase
_UNSEEN = -1


def max_matching(candidates: Sequence[Sequence[str]]) -> dict[int, str]:
    """A maximum matching: requirement index -> device name, each device at most once.

    ``candidates[i]`` lists the devices that could serve requirement ``i``, in order of
    preference: the greedy start takes the first free one, so a result that needs no
    augmenting keeps the preferences.
    """
    n = len(candidates)
    match_req: list[str | None] = [None] * n
    match_dev: dict[str, int] = {}
    for r, cands in enumerate(candidates):
        for d in cands:
            if d not in match_dev:
                match_req[r] = d
                match_dev[d] = r
                break
    while True:
        dist = _layers(candidates, match_req, match_dev)
        if dist is None:
            break
        ptr = [0] * n
        for root in range(n):
            if match_req[root] is None:
                _augment(root, candidates, match_req, match_dev, dist, ptr)
    return {r: d for r, d in enumerate(match_req) if d is not None}


def _layers(candidates: Sequence[Sequence[str]], match_req: list[str | None],
            match_dev: dict[str, int]) -> list[int] | None:
    """BFS layers from the unmatched requirements; None when no free device is reachable."""
    dist = [_UNSEEN] * len(candidates)
    queue = [r for r, d in enumerate(match_req) if d is None]
    for r in queue:
        dist[r] = 0
    found = False
    i = 0
    while i < len(queue):
        r = queue[i]
        i += 1
        for d in candidates[r]:
            r2 = match_dev.get(d)
            if r2 is None:
                found = True
            elif dist[r2] == _UNSEEN:
                dist[r2] = dist[r] + 1
                queue.append(r2)
    return dist if found else None


def _augment(root: int, candidates: Sequence[Sequence[str]], match_req: list[str | None],
             match_dev: dict[str, int], dist: list[int], ptr: list[int]) -> bool:
    """One augmenting path from ``root`` along the layers (iterative DFS), applied if found."""
    stack = [root]
    via: list[str] = []  # via[k] = the device leading from stack[k] to stack[k + 1]
    while stack:
        r = stack[-1]
        cands = candidates[r]
        advanced = False
        while ptr[r] < len(cands):
            d = cands[ptr[r]]
            ptr[r] += 1
            r2 = match_dev.get(d)
            if r2 is None:
                via.append(d)
                for rr, dd in zip(stack, via, strict=True):
                    match_req[rr] = dd
                    match_dev[dd] = rr
                return True
            if dist[r2] == dist[r] + 1:
                via.append(d)
                stack.append(r2)
                advanced = True
                break
        if not advanced:
            dist[r] = _DEAD
            stack.pop()
            if via:
                via.pop()
    return False


@dataclass(frozen=True)
class Deficit:
    """Requirements that cannot all be served: their candidate ``devices`` are fewer than they."""

    requirements: tuple[int, ...]  # indices, ascending
    devices: tuple[str, ...]  # every candidate of these requirements, sorted

    @property
    def missing(self) -> int:
        return len(self.requirements) - len(self.devices)


def deficits(candidates: Sequence[Sequence[str]], matching: dict[int, str]) -> list[Deficit]:
    """The Hall violators left by a maximum ``matching``, one per connected group.

    From the unmatched requirements, alternating paths (a candidate device, then the
    requirement it is matched to) reach a set of requirements whose candidates are all
    matched inside the set: fewer devices than requirements. That set does not depend on
    which maximum matching was found, so the groups (split where they share no device)
    are the same for any of them.
    """
    match_dev = {d: r for r, d in matching.items()}
    reached: set[int] = set()
    queue = [r for r in range(len(candidates)) if r not in matching]
    reached.update(queue)
    i = 0
    while i < len(queue):
        r = queue[i]
        i += 1
        for d in candidates[r]:
            r2 = match_dev.get(d)
            if r2 is not None and r2 not in reached:
                reached.add(r2)
                queue.append(r2)
    # split into groups that share devices (union-find over the reached requirements)
    parent = {r: r for r in reached}

    def root(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    owner: dict[str, int] = {}
    for r in sorted(reached):
        for d in candidates[r]:
            if d in owner:
                a, b = root(owner[d]), root(r)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[d] = r
    groups: dict[int, list[int]] = {}
    for r in sorted(reached):
        groups.setdefault(root(r), []).append(r)
    out = []
    for members in groups.values():
        devices = sorted({d for r in members for d in candidates[r]})
        out.append(Deficit(tuple(members), tuple(devices)))
    return sorted(out, key=lambda g: g.requirements)
