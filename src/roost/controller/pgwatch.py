"""Each servicehost pair's PostgreSQL, watched: metrics, the dashboard and
platform events (issue 16).

Every controller asks each pair's Patroni for its `/cluster` view every
few seconds (`watch_loop`: the members' REST APIs, either answers) and
keeps the last view (`PairHealth`): the metrics (`text`, pure:
`roost_pg_primary`, `roost_pg_replica_lag_bytes`,
`roost_pg_replication_problem` per pair and member) and the dashboard read
it. The lease holder alone turns a problem (`services.pg_problem`: no
primary, no standby, a standby being copied anew (reinitialized), a
standby not synchronous, its lag unknown or past 16 MB; or no member
answering) into a `pg-replication` platform event,
once per problem per pair, and its end into another (`PairWatch`, pure).
A new lease holder starts with nothing raised: a problem that outlived the
old one's term is said once more.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from roost import patroni
from roost.controller.astore import AsyncStore
from roost.controller.servicehosts import ask_patroni
from roost.controller.services import pg_problem
from roost.controller.store_pairs import PairRow

log = logging.getLogger("roost.controller")

EVENT = "pg-replication"
WATCH_INTERVAL_S = 5.0
NO_ANSWER = "no member's Patroni answers"


@dataclass(frozen=True)
class PairSeen:
    pair: PairRow
    view: patroni.ClusterView | None  # None: no member answered
    problem: str
    at: float


def judge(pair: PairRow, answers: dict[str, tuple[int, object]], at: float) -> PairSeen:
    """What the members' `/cluster` answers say of the pair (pure)."""
    bodies = [b for status, b in answers.values() if status == 200 and isinstance(b, dict)]
    if not bodies:
        return PairSeen(pair, None, NO_ANSWER, at)
    view = patroni.view(bodies[0])
    return PairSeen(pair, view, pg_problem(view), at)


class PairWatch:
    """Which pairs' problems were raised already (module docstring)."""

    def __init__(self) -> None:
        self._raised: dict[str, str] = {}

    def look(self, seen: Iterable[PairSeen]) -> list[str]:
        """The events to raise for what the pairs look like now."""
        out = []
        now = {s.pair.name: s.problem for s in seen}
        for name in [n for n in self._raised if n not in now]:
            del self._raised[name]  # the pair is gone: nothing to say
        for name, problem in sorted(now.items()):
            if problem and self._raised.get(name) != problem:
                self._raised[name] = problem
                out.append(f"PostgreSQL of servicehost pair {name}: {problem}")
            elif not problem and name in self._raised:
                del self._raised[name]
                out.append(f"PostgreSQL of servicehost pair {name}: replication healthy again")
        return out


class PairHealth:
    """The last view of every pair (what metrics and the dashboard show)."""

    def __init__(self) -> None:
        self.seen: dict[str, PairSeen] = {}

    def update(self, seen: Iterable[PairSeen]) -> None:
        self.seen = {s.pair.name: s for s in seen}

    def shown(self, pair: str) -> str:
        """One line for an app on `pair` ("" when the pair is not known)."""
        s = self.seen.get(pair)
        if s is None:
            return ""
        v = s.view
        if v is None:
            return f"postgres pair {pair}: {s.problem}"
        standby = v.synchronous or (v.standbys[0] if v.standbys else None)
        parts = [f"postgres pair {pair}: primary {_who(s.pair, v.primary)}"]
        if standby is not None:
            lag = "lag unknown" if standby.lag_bytes is None else f"{standby.lag_bytes} B behind"
            parts.append(f"standby {_who(s.pair, standby)} ({lag})")
        if s.problem:
            parts.append(s.problem)
        return ", ".join(parts)


def _who(pair: PairRow, member: patroni.MemberView | None) -> str:
    if member is None:
        return "none"
    return pair.host_at(member.name) or member.name


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def text(health: PairHealth) -> str:
    """The pairs as Prometheus exposition text (pure)."""
    primary: list[str] = []
    lag: list[str] = []
    problem: list[str] = []
    for name, s in sorted(health.seen.items()):
        pair = _label(name)
        problem.append(f'roost_pg_replication_problem{{pair="{pair}"}} {int(bool(s.problem))}\n')
        if s.view is None:
            continue
        for m in s.view.members:
            labels = f'pair="{pair}",member="{_label(s.pair.host_at(m.name) or m.name)}"'
            is_primary = s.view.primary is m
            primary.append(f"roost_pg_primary{{{labels}}} {int(is_primary)}\n")
            if not is_primary and m.lag_bytes is not None:
                lag.append(f"roost_pg_replica_lag_bytes{{{labels}}} {m.lag_bytes}\n")
    if not health.seen:
        return ""
    return "".join(
        [
            _gauge("roost_pg_primary", "1 for the member of a pair that is its primary", primary),
            _gauge("roost_pg_replica_lag_bytes", "How far a standby is behind", lag),
            _gauge(
                "roost_pg_replication_problem",
                "1 while a pair's replication has a problem (events say which)",
                problem,
            ),
        ]
    )


def _gauge(name: str, doc: str, samples: list[str]) -> str:
    return f"# HELP {name} {doc}\n# TYPE {name} gauge\n" + "".join(samples)


# One watch per Controller object (a daemon has one; tests may have several).
_HEALTH: weakref.WeakKeyDictionary[object, PairHealth] = weakref.WeakKeyDictionary()


def health_of(controller: object) -> PairHealth:
    found = _HEALTH.get(controller)
    if found is None:
        found = _HEALTH[controller] = PairHealth()
    return found


async def look_once(store: AsyncStore, health: PairHealth) -> list[PairSeen]:
    pairs = await store.service_pairs()
    answers = await asyncio.gather(
        *(ask_patroni(list(p.addresses), p.rest_port, "/cluster") for p in pairs)
    )
    now = time.time()
    seen = [judge(p, a, now) for p, a in zip(pairs, answers, strict=True)]
    health.update(seen)
    return seen


async def watch_loop(
    controller: object,
    store: AsyncStore,
    leader: Callable[[], bool],
    interval: float = WATCH_INTERVAL_S,
) -> None:
    """Every `interval`: look at every pair; the lease holder raises events."""
    health = health_of(controller)
    watch: PairWatch | None = None
    while True:
        try:
            seen = await look_once(store, health)
            if leader():
                watch = watch or PairWatch()
                for said in watch.look(seen):
                    (log.info if said.endswith("healthy again") else log.warning)("%s", said)
                    await store.add_event(EVENT, said)
            else:
                watch = None  # a new term says what is still wrong
        except Exception:  # a database blip must not end the watch
            log.exception("watching the servicehost pairs failed")
        await asyncio.sleep(interval)
