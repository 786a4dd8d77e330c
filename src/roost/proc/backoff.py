"""How long to wait before trying again: one capped exponential backoff.

Pure: `Backoff.delay(failures, rand)` is a function of the failure count and
a random draw the caller supplies (tests pass a fixed one), and
`Backoff.failures_after(failures, ran_s)` of how long the last try lasted
(from the caller's clock). Every retry loop and supervisor in Roost uses it:
restarting a crashed role, router worker, server or instance, re-fetching an
image or bundle, re-sending logs, a build result or a route snapshot.

The n-th consecutive failure waits base * 2**(n-1), capped at `max_s`; with
`jitter` j the delay is spread uniformly over [1-j, 1+j] times that (still
capped), so many clients that failed together do not retry together. A try
that lasted `reset_after_s` before failing was a success for a while: its
failure counts as the first again.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# 2**62 seconds is far beyond any cap; larger exponents would overflow a float.
_MAX_EXPONENT = 62


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.0
    reset_after_s: float = 30.0

    def delay(self, failures: int, rand: float = 0.5) -> float:
        """Seconds to wait after the `failures`-th consecutive failure (0: none).

        `rand` in [0, 1) picks the point in the jitter band (0.5: its middle).
        """
        if failures <= 0:
            return 0.0
        d = min(self.max_s, self.base_s * 2 ** min(failures - 1, _MAX_EXPONENT))
        if self.jitter:
            d *= 1.0 + self.jitter * (2.0 * rand - 1.0)
        return max(0.0, min(self.max_s, d))

    def failures_after(self, failures: int, ran_s: float) -> int:
        """The failure count once a try that ran `ran_s` seconds has failed."""
        return 1 if ran_s >= self.reset_after_s else failures + 1


class Retry:
    """A retry loop's state: the consecutive failures and the next delay.

    `failed()` counts a failure and says how long to wait; `succeeded()`
    starts over. The random source is injectable so a test knows the delays.
    """

    def __init__(self, backoff: Backoff, rand: Callable[[], float] = random.random) -> None:
        self.backoff = backoff
        self.failures = 0
        self._rand = rand

    def failed(self) -> float:
        self.failures += 1
        return self.backoff.delay(self.failures, self._rand())

    def succeeded(self) -> None:
        self.failures = 0

    @property
    def next_delay(self) -> float:
        """The delay the next failure would get (for a log line)."""
        return self.backoff.delay(self.failures + 1, 0.5)
