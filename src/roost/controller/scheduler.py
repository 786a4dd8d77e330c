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

Cost: O(placements + wants + new placements x hosts). The lease holder
places only the apps whose inputs changed since its last pass, passing what
every other app holds on each host as `reserved` (memory) and `placed`
(instances): those count against capacity and spread exactly as if they had
been placed in the same call, so a pass over 50,000 instances costs what
the few that changed cost.
"""

from __future__ import annotations

import heapq
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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

    def __init__(
        self,
        live: dict[str, HostInfo],
        reserved: Mapping[str, int] | None = None,
        placed: Mapping[str, int] | None = None,
    ) -> None:
        self.live = live
        self.used: Counter[str] = Counter(reserved or {})
        self.total: Counter[str] = Counter(placed or {})
        # (instances, host id) of the live hosts, least loaded first; an
        # entry whose count is no longer the host's is stale and skipped.
        self._heap: list[tuple[int, str]] | None = None

    def add(self, host_id: str, memory_mb: int) -> None:
        self.used[host_id] += memory_mb
        self.total[host_id] += 1
        self._note(host_id)

    def remove(self, host_id: str, memory_mb: int) -> None:
        self.used[host_id] -= memory_mb
        self.total[host_id] -= 1
        self._note(host_id)

    def _note(self, host_id: str) -> None:
        if self._heap is not None and host_id in self.live:
            heapq.heappush(self._heap, (self.total[host_id], host_id))

    def least_loaded(self, ok: Callable[[HostInfo], bool]) -> HostInfo | None:
        """The live host with the fewest instances (then the lowest id) that is `ok`."""
        if self._heap is None:
            self._heap = [(self.total[h], h) for h in self.live]
            heapq.heapify(self._heap)
        passed: list[tuple[int, str]] = []
        found = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            count, host_id = entry
            if count != self.total[host_id]:
                continue  # stale: the host's current entry is further on
            passed.append(entry)
            if ok(self.live[host_id]):
                found = self.live[host_id]
                break
        for entry in passed:
            heapq.heappush(self._heap, entry)
        return found

    def fits(self, host: HostInfo, memory_mb: int) -> bool:
        return host.memory_mb == 0 or self.used[host.host_id] + memory_mb <= host.memory_mb


def place(
    wants: Iterable[Want],
    current: Iterable[Placement],
    hosts: Iterable[HostInfo],
    new_id: Callable[[Want, int], str],
    reserved: Mapping[str, int] | None = None,
    placed: Mapping[str, int] | None = None,
) -> list[Placement]:
    """The new complete set of placements of the wants' apps.

    `reserved` and `placed`: memory (MB) and instance counts per host held by
    apps not in this call (see the module docstring).
    """
    live = {h.host_id: h for h in hosts if h.alive}
    wants = sorted(wants, key=lambda w: (w.app, w.release, w.process_type))
    want_by_key: dict[Key, Want] = {(w.app, w.release, w.process_type): w for w in wants}

    by_key: dict[Key, list[Placement]] = {}
    for p in current:
        if p.host_id in live:
            key = p.key
            if key in want_by_key:
                by_key.setdefault(key, []).append(p)
    cap = _Capacity(live, reserved, placed)
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
    # The usual answer: the least loaded host with room and no copy of this
    # type yet, found without looking at every host.
    fresh = cap.least_loaded(lambda h: per_host[h.host_id] == 0 and cap.fits(h, w.memory_mb))
    if fresh is not None:
        return fresh
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


def no_room(
    wants: Iterable[Want],
    placements: Iterable[Placement],
    hosts: Iterable[HostInfo],
    reserved: Mapping[str, int] | None = None,
) -> dict[Key, str]:
    """Why `place` left wants short for want of room, by want: what a deploy
    that cannot be placed reports instead of waiting for ever.

    `placements` is what `place` returned for `wants`; `reserved` the memory
    per host of the apps not in that call. A want is short for want of room
    when no live host could take one more of its instances. A want short
    for another reason (held back, not placed yet) is not named, nor is any
    when no host is live: a host not heard from yet is waited for.
    """
    live = [h for h in hosts if h.alive]
    if not live:
        return {}
    want_by_key = {(w.app, w.release, w.process_type): w for w in wants}
    have: Counter[Key] = Counter()
    used: Counter[str] = Counter(reserved or {})
    for p in placements:
        have[p.key] += 1
        w = want_by_key.get(p.key)
        used[p.host_id] += w.memory_mb if w is not None else 0
    out: dict[Key, str] = {}
    for key, w in want_by_key.items():
        missing = w.count - have[key]
        if missing <= 0 or any(h.memory_mb == 0 for h in live):
            continue
        free = max(h.memory_mb - used[h.host_id] for h in live)
        if free >= w.memory_mb:
            continue
        out[key] = (
            f"no host has room for {missing} more {w.process_type} instance(s) of "
            f"{w.memory_mb} MB each: the most free memory on any of the {len(live)} "
            f"live host(s) is {max(free, 0)} MB"
        )
    return out


def new_instance_id(w: Want, idx: int) -> str:
    """A new placement's id: readable (app, type, index, release) and unique."""
    return f"{w.app}-{w.process_type}-{idx}-v{w.release}-{secrets.token_hex(3)}"
