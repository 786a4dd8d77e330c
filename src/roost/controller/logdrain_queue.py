"""One drain's queue of framed lines, and what became of them (pure).

Theory of operation: lines reach a controller as fast as apps write them;
a drain takes them as fast as its receiver does, or not at all. Between
the two sits this bounded queue, so a slow or dead receiver costs the
controller a fixed amount of memory and nothing else: `offer` never
waits, and past `max_lines` frames or `max_bytes` bytes the OLDEST frames
go and are counted as dropped (recent lines are what someone reading the
drain wants once it is back).

The sender `take`s a batch when one is due, then reports `delivered` or
`failed`. A failed batch goes back to the front (it may be dropped by the
bound like any other), and the next try waits a capped exponential
backoff from the injected clock, so a dead receiver is tried every few
seconds, not in a loop. The counters and the last error are what `roost
drains list` shows.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from roost.proc.backoff import Backoff

BACKOFF = Backoff(base_s=0.5, max_s=30.0, jitter=0.2, reset_after_s=0.0)


@dataclass(frozen=True)
class DrainCounts:
    delivered: int
    dropped: int
    failing: bool
    last_error: str
    last_ok_at: float | None
    last_error_at: float | None


class DrainQueue:
    def __init__(
        self,
        *,
        max_lines: int = 10_000,
        max_bytes: int = 4 << 20,
        backoff: Backoff = BACKOFF,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.backoff = backoff
        self.rand = rand
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._in_flight = False
        self.failures = 0
        self.next_try = 0.0  # on the caller's clock
        self.delivered = 0
        self.dropped = 0
        self.last_error = ""
        self.last_ok_at: float | None = None
        self.last_error_at: float | None = None

    def __len__(self) -> int:
        return len(self._frames)

    def offer(self, frames: Sequence[bytes]) -> None:
        """Queue `frames` (never waits); the oldest go past the bounds."""
        self._frames.extend(frames)
        self._bytes += sum(len(f) for f in frames)
        self._bound()

    def _bound(self) -> None:
        while self._frames and (len(self._frames) > self.max_lines or self._bytes > self.max_bytes):
            self._bytes -= len(self._frames.popleft())
            self.dropped += 1

    def wait_s(self, now: float) -> float | None:
        """Seconds until a batch is due; None when there is nothing to send."""
        if not self._frames or self._in_flight:
            return None
        return max(0.0, self.next_try - now)

    def take(self, now: float, max_lines: int, max_bytes: int) -> list[bytes]:
        """The next batch (at least one frame, then up to the limits) if one
        is due, else []; it is in flight until `delivered` or `failed`."""
        if self._in_flight or not self._frames or now < self.next_try:
            return []
        batch = [self._frames.popleft()]
        size = len(batch[0])
        while self._frames and len(batch) < max_lines:
            nxt = len(self._frames[0])
            if size + nxt > max_bytes:
                break
            batch.append(self._frames.popleft())
            size += nxt
        self._bytes -= size
        self._in_flight = True
        return batch

    def sent(self, batch: Sequence[bytes], at: float, wall: float) -> None:
        """`batch` reached the receiver (`at` on the queue's clock, `wall` for people)."""
        self._in_flight = False
        self.delivered += len(batch)
        self.failures = 0
        self.next_try = at
        self.last_ok_at = wall

    def failed(self, batch: Sequence[bytes], error: str, at: float, wall: float) -> float:
        """`batch` did not get through: back to the front, the next try after a
        backoff; the seconds to wait."""
        self._in_flight = False
        self._frames.extendleft(reversed(batch))
        self._bytes += sum(len(f) for f in batch)
        self._bound()
        self.failures += 1
        delay = self.backoff.delay(self.failures, self.rand())
        self.next_try = at + delay
        self.last_error = error
        self.last_error_at = wall
        return delay

    def counts(self) -> DrainCounts:
        return DrainCounts(
            delivered=self.delivered,
            dropped=self.dropped,
            failing=self.failures > 0,
            last_error=self.last_error,
            last_ok_at=self.last_ok_at,
            last_error_at=self.last_error_at,
        )
