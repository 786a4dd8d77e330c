"""Placement: which host runs which instance. Pure; no I/O, no clock.

Theory of operation: the input is what should run (`Want`: an app release's
process type and a count), what is placed now, and the hosts with their
liveness and capacity. Placements on live hosts are kept whenever they are
still wanted (moving a running instance costs a restart), extra ones are
dropped highest index first, and missing ones go to the live host with room
that runs the fewest copies of the same process type, then the fewest
instances overall: copies of one process type spread over distinct hosts
whenever there are enough. Placements on dead hosts are dropped and replaced;
a replacement takes the lowest free index, so "web.1" stays "web.1" wherever
it runs.

One move is made without a host dying: when all copies of a process type
sit on one host (a host died and its copies went to the only other one, or
capacity was short) and another live host with room exists now, the
highest-index copy moves there (same index, new instance id), so every
process type with two or more copies runs on at least two hosts whenever two
exist. Nothing else is ever rebalanced: placement moves as little as
possible.

Cost: O(placements + wants + new placements x hosts), so a reconcile over
10,000 instances stays cheap when little changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Fewest distinct hosts a process type with several copies must span.
MIN_SPREAD = 2


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


Key = tuple[str, int, str]


class _Capacity:
    """Memory reserved and instances placed per live host."""

    def __init__(self, live: dict[str, HostInfo]) -> None:
        self.live = live
        self.used: Counter[str] = Counter()
        self.total: Counter[str] = Counter()

    def add(self, host_id: str, memory_mb: int) -> None:
        self.used[host_id] += memory_mb
        self.total[host_id] += 1

    def remove(self, host_id: str, memory_mb: int) -> None:
        self.used[host_id] -= memory_mb
        self.total[host_id] -= 1

    def fits(self, host: HostInfo, memory_mb: int) -> bool:
        return host.memory_mb == 0 or self.used[host.host_id] + memory_mb <= host.memory_mb


def place(
    wants: Iterable[Want],
    current: Iterable[Placement],
    hosts: Iterable[HostInfo],
    new_id: Callable[[Want, int], str],
) -> list[Placement]:
    """The new complete set of placements."""
    live = {h.host_id: h for h in hosts if h.alive}
    wants = sorted(wants, key=lambda w: (w.app, w.release, w.process_type))
    want_by_key: dict[Key, Want] = {(w.app, w.release, w.process_type): w for w in wants}

    by_key: dict[Key, list[Placement]] = {}
    for p in current:
        if p.host_id in live:
            key = p.key
            if key in want_by_key:
                by_key.setdefault(key, []).append(p)
    cap = _Capacity(live)
    for key, ps in by_key.items():
        ps.sort(key=lambda p: p.idx)
        del ps[want_by_key[key].count :]
        for p in ps:
            cap.add(p.host_id, want_by_key[key].memory_mb)

    for key, ps in by_key.items():
        _restore_spread(want_by_key[key], ps, cap, new_id)

    result: list[Placement] = [p for ps in by_key.values() for p in ps]
    for w in wants:
        mine = by_key.get((w.app, w.release, w.process_type), [])
        missing = w.count - len(mine)
        if missing <= 0:
            continue
        per_host: Counter[str] = Counter(p.host_id for p in mine)
        taken = {p.idx for p in mine}
        for _ in range(missing):
            host = _best_host(w, per_host, cap)
            if host is None:
                break  # no capacity: the instance stays unplaced until there is
            idx = next(i for i in range(1, w.count + len(taken) + 2) if i not in taken)
            taken.add(idx)
            result.append(
                Placement(
                    instance_id=new_id(w, idx),
                    app=w.app,
                    release=w.release,
                    process_type=w.process_type,
                    idx=idx,
                    host_id=host.host_id,
                )
            )
            per_host[host.host_id] += 1
            cap.add(host.host_id, w.memory_mb)
    return sorted(result, key=lambda p: (p.key, p.idx))


def _best_host(w: Want, per_host: Counter[str], cap: _Capacity) -> HostInfo | None:
    best: HostInfo | None = None
    best_rank: tuple[int, int, str] | None = None
    for h in cap.live.values():
        if not cap.fits(h, w.memory_mb):
            continue
        rank = (per_host[h.host_id], cap.total[h.host_id], h.host_id)
        if best_rank is None or rank < best_rank:
            best, best_rank = h, rank
    return best


def _restore_spread(
    w: Want, kept: list[Placement], cap: _Capacity, new_id: Callable[[Want, int], str]
) -> None:
    """Move copies that keep `w` on too few hosts to live hosts without one.

    Mutates `kept` and `cap`. The moved copy keeps its index (a new instance
    id, on the new host), and the target is chosen here, with its capacity
    reserved at once, so a move can never land back where it came from.
    """
    target = min(MIN_SPREAD, w.count)
    if len(kept) < 2 or len({p.host_id for p in kept}) >= target:
        return  # the common case, decided without counting
    while True:
        per_host = Counter(p.host_id for p in kept)
        if len(per_host) >= target or len(kept) < 2:
            return
        free = [
            h for h in cap.live.values() if h.host_id not in per_host and cap.fits(h, w.memory_mb)
        ]
        if not free:
            return
        dest = min(free, key=lambda h: (cap.total[h.host_id], h.host_id))
        crowded = max(per_host, key=lambda host_id: (per_host[host_id], host_id))
        victim = max((p for p in kept if p.host_id == crowded), key=lambda p: p.idx)
        kept.remove(victim)
        cap.remove(victim.host_id, w.memory_mb)
        kept.append(
            Placement(
                instance_id=new_id(w, victim.idx),
                app=w.app,
                release=w.release,
                process_type=w.process_type,
                idx=victim.idx,
                host_id=dest.host_id,
            )
        )
        cap.add(dest.host_id, w.memory_mb)
