"""Who an SSH key belongs to: asked of the controllers, remembered briefly.

An SSH login asks about the same key twice (the client's "would you accept
this key?" and then the signed attempt), and `git push`, rsync and scp each
log in anew: a short cache spares the controllers. It is short on purpose, so
a key removed with `roost keys remove` stops working within seconds on every
gateway. Unknown keys are remembered for less time than known ones.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

KNOWN_TTL_S = 10.0
UNKNOWN_TTL_S = 0.5
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Identity:
    account_id: int
    email: str
    fingerprint: str


Lookup = Callable[[str], Awaitable[Identity | None]]


class IdentityCache:
    def __init__(self, lookup: Lookup, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._clock = clock
        self._entries: dict[str, tuple[float, Identity | None]] = {}

    async def identify(self, fingerprint: str) -> Identity | None:
        now = self._clock()
        hit = self._entries.get(fingerprint)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self._lookup(fingerprint)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
        ttl = KNOWN_TTL_S if found is not None else UNKNOWN_TTL_S
        self._entries[fingerprint] = (now + ttl, found)
        return found
