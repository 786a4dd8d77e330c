"""Placement: which host runs which instance. Pure; no I/O, no clock.

Theory of operation: the input is what should run (`Want`: an app release's
process type and a count), what is placed now, and the hosts with their
liveness and capacity. Placements on live hosts are kept whenever they are
still wanted (moving a running instance costs a restart), extra ones are
dropped highest index first, and missing ones go to the live host with room
that runs the fewest copies of the same process type, then the fewest
instances overall: copies of one process type spread over distinct hosts
whenever there are enough. Placements on dead hosts are dropped and replaced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class HostInfo:
    host_id: str
    alive: bool
    memory_mb: int = 0  # 0: unknown, treated as unlimited


@dataclass(frozen=True)
class Want:
    app: str
    release: int
    process_type: str
    count: int
    memory_mb: int = 256


@dataclass(frozen=True)
class Placement:
    instance_id: str
    app: str
    release: int
    process_type: str
    idx: int
    host_id: str

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.app, self.release, self.process_type)


def place(
    wants: Iterable[Want],
    current: Iterable[Placement],
    hosts: Iterable[HostInfo],
    new_id: Callable[[Want, int], str],
) -> list[Placement]:
    """The new complete set of placements."""
    live = {h.host_id: h for h in hosts if h.alive}
    wants = sorted(wants, key=lambda w: (w.app, w.release, w.process_type))
    want_by_key = {(w.app, w.release, w.process_type): w for w in wants}
    mem_of = {k: w.memory_mb for k, w in want_by_key.items()}

    kept: list[Placement] = []
    by_key: dict[tuple[str, int, str], list[Placement]] = {}
    for p in sorted(current, key=lambda p: (p.key, p.idx)):
        if p.key in want_by_key and p.host_id in live:
            by_key.setdefault(p.key, []).append(p)
    for key, ps in by_key.items():
        kept.extend(ps[: want_by_key[key].count])

    used_mem: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for p in kept:
        used_mem[p.host_id] += mem_of[p.key]
        total[p.host_id] += 1

    result = list(kept)
    for w in wants:
        mine = [p for p in result if p.key == (w.app, w.release, w.process_type)]
        per_host: Counter[str] = Counter(p.host_id for p in mine)
        taken = {p.idx for p in mine}
        for _ in range(w.count - len(mine)):
            candidates = [
                h
                for h in live.values()
                if h.memory_mb == 0 or used_mem[h.host_id] + w.memory_mb <= h.memory_mb
            ]
            if not candidates:
                break  # no capacity: the instance stays unplaced until there is
            host = min(candidates, key=lambda h: (per_host[h.host_id], total[h.host_id], h.host_id))
            idx = next(i for i in range(1, w.count + len(taken) + 2) if i not in taken)
            taken.add(idx)
            p = Placement(
                instance_id=new_id(w, idx),
                app=w.app,
                release=w.release,
                process_type=w.process_type,
                idx=idx,
                host_id=host.host_id,
            )
            result.append(p)
            per_host[host.host_id] += 1
            total[host.host_id] += 1
            used_mem[host.host_id] += w.memory_mb
    return sorted(result, key=lambda p: (p.key, p.idx))
