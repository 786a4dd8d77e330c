"""When to restart a crashed server: a pure policy over a clock reading.

A server that crashes again soon after starting waits twice as long as last
time (0.5 s, 1 s, 2 s ... up to `max_s`); one that ran for `stable_s` before
dying is forgiven its history and restarts after `base_s`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    base_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 30.0


@dataclass
class Backoff:
    policy: RestartPolicy
    failures: int = 0

    def after_exit(self, started_at: float, now: float) -> float:
        """Seconds to wait before starting again, for a run from `started_at` to `now`."""
        if now - started_at >= self.policy.stable_s:
            self.failures = 0
        self.failures += 1
        return min(self.policy.base_s * 2 ** (self.failures - 1), self.policy.max_s)
