"""What the built-in log store keeps of each app (pure).

Every app keeps the platform's ROOST_LOG_LINES newest lines unless it
chose its own (`roost log-retention APP --lines N --days D`): a line
count, an age in days, or both (a line goes when either says so). The
count is enforced for the apps that logged since the last trim (an app
that wrote nothing has not grown); the age for every app that set one,
since lines grow old without anything being written.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

MIN_LINES = 1500  # what `roost logs` shows at most in one go, at least
MAX_LINES = 10_000_000
# An hour at least: a shorter age would drop lines before `roost logs` or a
# drain's retry could read them (and 1e-300 days is not a choice anyone means).
MIN_DAYS = 1 / 24
MAX_DAYS = 3650.0
DAY_S = 86400.0


class BadRetention(ValueError):
    """A retention out of bounds; the message says which."""


@dataclass(frozen=True)
class Retention:
    lines: int | None  # None: the platform's default
    days: float | None  # None: no age limit


@dataclass(frozen=True)
class Trim:
    app_id: int
    keep_lines: int | None  # keep only the newest this many (None: no count limit now)
    before: float | None  # drop lines older than this wall-clock time


def check(lines: int | None, days: float | None) -> None:
    if lines is not None and not MIN_LINES <= lines <= MAX_LINES:
        raise BadRetention(f"log retention is {MIN_LINES} to {MAX_LINES} lines")
    if days is not None and not MIN_DAYS <= days <= MAX_DAYS:
        raise BadRetention(f"log retention is one hour ({MIN_DAYS:.4f} days) to {MAX_DAYS:g} days")


def plan(
    logged: Set[int],
    chosen: Mapping[int, Retention],
    default_lines: int,
    now: float,
) -> list[Trim]:
    """The trims due: `logged` apps wrote lines since the last trim;
    `chosen` holds the apps that chose their own retention."""
    out = []
    for app_id in sorted(set(logged) | {a for a, r in chosen.items() if r.days is not None}):
        own = chosen.get(app_id, Retention(None, None))
        lines, days = own.lines, own.days
        keep = (lines if lines is not None else default_lines) if app_id in logged else None
        before = now - days * DAY_S if days is not None else None
        out.append(Trim(app_id, keep, before))
    return out
