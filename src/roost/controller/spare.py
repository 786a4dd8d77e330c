"""A spare servicehost takes a lost one's place by itself (issue 16).

Theory of operation. `roost servicehost replace OLD NEW` is the operator's
way (controller/replace.py); where a spare waits (a servicehost that
answers, in no pair, holding no app's service), the lease holder does the
same on its own once a paired servicehost has answered no survey for
`ROOST_SPARE_AFTER_S` (10 minutes by default; 0 turns this off). Long
enough that a reboot, a network blip or an upgrade is not taken for a
loss: a replaced host that comes back finds its place taken.

`SpareWatch` (pure, tested with a fake clock) keeps, for each paired
servicehost, since when it has been silent; a survey it answers forgets
that, so a host back before the threshold is left alone. Once one has been
silent that long, it names (OLD, NEW): NEW the first spare by id that
`replace.plan` accepts (the command's own refusals: OLD's partner must
answer, NEW must hold nothing and be in no pair). Each OLD is named once
per silence (no flapping, no retry loop): a replacement that fails half-way
is an event, and the command finishes it. A new lease holder counts silence
from its own first survey (it cannot know how long a host was silent
before), so a replacement may come one threshold after a hand-over.

`spare_loop` is the thin adapter: every few seconds on the lease holder, a
survey of the servicehosts, the watch's decision, and the same flow as the
command (controller/replaceflow.py), its event saying it was automatic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from roost.controller import replace, replaceflow
from roost.controller.core import Controller
from roost.controller.store_pairs import PairRow
from roost.wire.messages import ServiceHostStatus

log = logging.getLogger("roost.controller")

# Surveys are this often at most; a short threshold (tests) surveys more.
SURVEY_EVERY_S = 15.0


@dataclass(frozen=True)
class Due:
    """OLD, silent for `silent_s`, is to be replaced by the spare NEW."""

    old: str
    new: str
    silent_s: float


def spares(reports: Mapping[str, ServiceHostStatus], pairs: list[PairRow]) -> list[str]:
    """The servicehosts answering that are in no pair and hold no app's
    service, by id (pure)."""
    paired = {h for p in pairs for h in p.hosts}
    return sorted(
        h for h, r in reports.items() if h not in paired and not any(s.app for s in r.servers)
    )


class SpareWatch:
    """Paired servicehosts' silences, and which to replace (module docstring)."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._silent_since: dict[str, float] = {}
        self._named: set[str] = set()

    def look(
        self,
        now: float,
        reports: Mapping[str, ServiceHostStatus],
        addresses: Mapping[str, str],
        pairs: list[PairRow],
    ) -> list[Due]:
        """One survey's answers (`reports`: host id -> status of those that
        answered; `addresses`: where each answers) at `now`: the
        replacements due, each OLD named once per silence."""
        paired = {h for p in pairs for h in p.hosts}
        for h in list(self._silent_since):
            if h in reports or h not in paired:
                del self._silent_since[h]
        # Back, or no longer in a pair (replaced): a later silence counts anew.
        self._named = {h for h in self._named if h in paired and h not in reports}
        for h in sorted(paired - set(reports)):
            self._silent_since.setdefault(h, now)
        if self.after_s <= 0:
            return []
        free = spares(reports, pairs)
        due: list[Due] = []
        for old, since in sorted(self._silent_since.items()):
            if old in self._named or now - since < self.after_s:
                continue
            for new in free:
                try:
                    replace.plan(old, new, reports, addresses, pairs)
                except replace.ReplaceRefused:
                    continue
                due.append(Due(old, new, now - since))
                self._named.add(old)
                free.remove(new)
                break
        return due


def survey_every(after_s: float) -> float:
    """How often the lease holder surveys: a quarter of the threshold, at
    most SURVEY_EVERY_S, at least a second."""
    return max(1.0, min(SURVEY_EVERY_S, after_s / 4))


async def spare_loop(
    c: Controller,
    leader: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """On the lease holder, replace a lost paired servicehost by a spare
    (module docstring). Does nothing while the setting is 0, on a platform
    with no servicehost, or with no pair recorded."""
    after_s = c.settings.spare_after_s
    if after_s <= 0:
        return
    watch: SpareWatch | None = None
    while True:
        try:
            b = c.services
            pairs = await c.store.service_pairs() if leader() else []
            if b is None or b.hosts is None or not pairs or not leader():
                watch = None  # a new term counts silences anew
            else:
                watch = watch or SpareWatch(after_s)
                await b.retirements.refresh(c.store, b.hosts, b.status)
                reports = await b.hosts.survey()
                for due in watch.look(clock(), reports, b.hosts.addresses(), pairs):
                    await _replace(c, due)
        except Exception:  # a database blip must not end the watch
            log.exception("watching for lost servicehosts failed")
        await asyncio.sleep(survey_every(after_s))


async def _replace(c: Controller, due: Due) -> None:
    why = f"automatically, {due.old} silent for {due.silent_s:.0f} s and {due.new} a spare"
    log.warning("servicehost %s: replacing it by %s (%s)", due.old, due.new, why)
    try:
        done = await replaceflow.carry_out(c, due.old, due.new, why)
    except replace.ReplaceRefused as exc:
        # Refused at the last moment (OLD answered again, NEW took a service):
        # nothing changed; the watch names OLD again only after it answers.
        await c.store.add_event(replaceflow.FAILED_EVENT, f"{why}: refused: {exc}")
    except RuntimeError as exc:
        log.error("servicehost %s: the automatic replacement failed: %s", due.old, exc)
    else:
        log.info("servicehost %s replaced by %s in %s", due.old, due.new, ", ".join(done.pairs))
