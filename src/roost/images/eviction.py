"""Which cached images and layers to drop: LRU over a two-level graph (pure).

Entries are image roots and shared layers; an image lists the layers it
uses. An entry may be evicted only when nothing left in the cache uses it,
so a layer goes after (never before) the last image naming it, and the
layers of a kept (pinned or busy) image are never candidates at all. Among
the candidates the least recently used goes first; evicting an image can
make its layers candidates, each at its own last-use time.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheEntry:
    digest: str
    size: int
    last_used: float
    # Ids of the entries this one uses (an image's shared layers).
    layers: tuple[str, ...] = ()


def plan_eviction(entries: list[CacheEntry], max_bytes: int, keep: set[str]) -> list[str]:
    """Ids to evict, in order, until the total fits `max_bytes`.

    Never chooses an id in `keep`, nor one used by an entry that stays; when
    what must stay alone exceeds the limit, the cache stays over it rather
    than break images in use.
    """
    by_id = {e.digest: e for e in entries}
    total = sum(e.size for e in entries)
    users: dict[str, int] = {}
    for e in entries:
        for layer in e.layers:
            if layer in by_id:
                users[layer] = users.get(layer, 0) + 1
    heap = [(e.last_used, e.digest) for e in entries if not users.get(e.digest)]
    heapq.heapify(heap)
    out: list[str] = []
    while total > max_bytes and heap:
        _, digest = heapq.heappop(heap)
        if digest in keep:
            continue
        e = by_id[digest]
        out.append(digest)
        total -= e.size
        for layer in e.layers:
            if layer not in by_id:
                continue
            users[layer] -= 1
            if users[layer] == 0:
                heapq.heappush(heap, (by_id[layer].last_used, layer))
    return out
