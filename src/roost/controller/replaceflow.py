"""A servicehost replacement carried out, and what follows it (issue 16).

One flow for `roost servicehost replace OLD NEW` (the API) and for the lease
holder replacing a lost servicehost by a spare on its own (controller/
spare.py): the replacement itself (controller/replace.py), then the pair's
apps read their credentials again and get a fresh release (their runners'
data proxies learn of NEW), and a platform event says what was done, or
what failed (the command, repeated, finishes a half-done replacement).
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.controller import replace
from roost.controller.core import Controller
from roost.controller.store import AppRow

DONE_EVENT = "servicehost-replaced"
FAILED_EVENT = "servicehost-replace-failed"


async def roll(c: Controller, app: AppRow, why: str) -> int | None:
    """Instances pick up changed credentials through a fresh release (its
    version; None for an app with nothing released)."""
    if app.current_release is None:
        return None
    version = await c.store.copy_release(app.id, app.current_release, why)
    c.wake.set()
    return version


@dataclass(frozen=True)
class Outcome:
    old: str
    new: str
    pairs: list[str]
    redis_replicas: list[str]
    rolled: list[str]
    problems: list[str]


async def carry_out(c: Controller, old: str, new: str, why: str = "") -> Outcome:
    """Replace OLD by NEW and follow up. ReplaceRefused: nothing changed (no
    event: the caller says why); RuntimeError: a step failed, an event says
    so. `why` prefixes the events (how the replacement came about)."""
    b = c.services
    if b is None or b.hosts is None:
        raise replace.ReplaceRefused(
            "no servicehost is configured on this platform: nothing to replace"
        )
    lead = f"{why}: " if why else ""
    try:
        done = await replace.replace(c.store, b.hosts, old, new)
    except RuntimeError as exc:
        await c.store.add_event(FAILED_EVENT, f"{lead}{old} by {new}: {exc}")
        raise
    b.forget(done.apps)
    # OLD retired: no more surveys of it, its last report dropped, at once here.
    await b.retirements.refresh(c.store, b.hosts, b.status, force=True)
    rolled = []
    for app_id in done.apps:
        app = await c.store.app_by_id(app_id)
        if await roll(c, app, f"servicehost {old} replaced by {new}") is not None:
            rolled.append(app.name)
    summary = f"{lead}{old} replaced by {new} in pair(s) {', '.join(done.pairs)}"
    if done.problems:
        summary += "; " + "; ".join(done.problems)
    await c.store.add_event(DONE_EVENT, summary)
    return Outcome(old, new, done.pairs, done.redis, rolled, done.problems)
