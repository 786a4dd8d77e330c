"""A pair's standby that cannot stream any more is made again (issue 16).

Theory of operation. A standby that was away long (its host down, its
Patroni stopped) comes back to a primary that may no longer have the WAL it
needs: Patroni keeps a replication slot only for the members in etcd, and a
member's key expires ttl seconds after it stops renewing it, so the slot is
dropped and the primary recycles the WAL. The standby's PostgreSQL then
runs in recovery asking for a segment that is gone ("requested WAL segment
... has already been removed"), for ever: Patroni 3.0 rewinds a member
whose timeline diverged, but does not re-copy one that merely fell too far
behind (tests/cluster/test_pg_pair_rejoin.py showed it stuck).

So each member watches itself (`watch`, beside its Patroni): when it has
been a replica with no WAL receiver streaming for `STUCK_AFTER_S` (the
setting ROOST_PAIR_STUCK_AFTER_S; tests make it short) while
the pair has a running leader, it asks its own Patroni to reinitialize it
(`POST /reinitialize`: the data directory removed, a fresh pg_basebackup
from the leader), which is what an operator would do by hand with
`patronictl reinit`. Never on a leader (Patroni refuses it anyway), never
while no leader runs (this copy may be the best there is), and at most once
per `COOLDOWN_S` (a copy of a large database takes time; a failed one is
tried again later). The decision is `Stuck.look` (pure, tested as data).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import psycopg

from roost import patroni
from roost.servicehost.pgpair import PairPlan

log = logging.getLogger("roost.servicehost")

STUCK_AFTER_S = 60.0
COOLDOWN_S = 600.0
LOOK_EVERY_S = 5.0
ASK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Look:
    """What this member's Patroni and PostgreSQL say now."""

    role: str  # Patroni's: "replica", "master"/"leader", "uninitialized", ...
    state: str  # Patroni's: "running", "starting", "creating replica", ...
    receiving: bool  # a WAL receiver streamed from the primary in the last seconds
    leader_running: bool  # the pair has a leader and it runs
    synchronous: bool = False  # the leader has it as its synchronous standby


class Stuck:
    """When a replica has not streamed for long enough to be made again."""

    def __init__(self, after_s: float = STUCK_AFTER_S, cooldown_s: float = COOLDOWN_S) -> None:
        self.after_s = after_s
        self.cooldown_s = cooldown_s
        self._since: float | None = None
        self._last_reinit: float | None = None

    def look(self, now: float, seen: Look | None) -> bool:
        """True when this member should be reinitialized now (the caller
        does it); `seen` None: it could not be asked (nothing is decided)."""
        stuck = (
            seen is not None
            and seen.role == "replica"
            and seen.state == "running"
            and not seen.receiving
            and not seen.synchronous
            and seen.leader_running
        )
        if not stuck:
            if seen is not None:
                self._since = None
            return False
        if self._since is None:
            self._since = now
        if now - self._since < self.after_s:
            return False
        if self._last_reinit is not None and now - self._last_reinit < self.cooldown_s:
            return False
        self._last_reinit = now
        self._since = None
        return True


def _rest(plan: PairPlan) -> str:
    return f"http://{patroni.url_host(patroni.bare(plan.host))}:{plan.rest_port}"


async def _receiving(plan: PairPlan) -> bool:
    conn = await psycopg.AsyncConnection.connect(
        host=patroni.bare(plan.host),
        port=plan.pg_port,
        user=patroni.SUPERUSER,
        password=plan.superuser_password,
        dbname="postgres",
        connect_timeout=int(ASK_TIMEOUT_S),
        autocommit=True,
    )
    async with conn:
        # Streaming, and heard from the primary lately: a receiver that
        # starts and is refused (its WAL gone) is "streaming" for a moment.
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"
            " AND last_msg_receipt_time > now() - interval '10 seconds'"
        )
        row = await cur.fetchone()
    return bool(row and row[0])


async def ask(plan: PairPlan) -> Look | None:
    """This member's state now (None when its Patroni does not answer)."""
    try:
        async with httpx.AsyncClient(timeout=ASK_TIMEOUT_S) as http:
            me = (await http.get(_rest(plan) + "/patroni")).json()
            cluster = (await http.get(_rest(plan) + "/cluster")).json()
    except (httpx.HTTPError, ValueError):
        return None
    view = patroni.view(cluster if isinstance(cluster, dict) else {})
    leader = view.primary
    role, state = str(me.get("role", "")), str(me.get("state", ""))
    receiving = False
    if role == "replica" and state == "running":
        try:
            receiving = await _receiving(plan)
        except (psycopg.Error, OSError):
            return None  # its PostgreSQL does not answer: not judged
    sync = view.synchronous
    return Look(
        role,
        state,
        receiving,
        leader is not None and leader.state == "running",
        synchronous=sync is not None and sync.name == plan.host,
    )


async def reinitialize(plan: PairPlan) -> str:
    """Ask this member's Patroni to make it again from the leader."""
    auth = (patroni.REST_USER, plan.rest_password)
    async with httpx.AsyncClient(timeout=ASK_TIMEOUT_S * 3, auth=auth) as http:
        r = await http.post(_rest(plan) + "/reinitialize", json={"force": True})
    return f"{r.status_code} {r.text.strip()}"


async def watch(
    plan_of: Callable[[], PairPlan | None],
    stuck_after_s: float = STUCK_AFTER_S,
    every: float = LOOK_EVERY_S,
) -> None:
    """Until cancelled: look at this member (while there is one) and make it
    again once it has not streamed for `stuck_after_s` (module docstring;
    the setting ROOST_PAIR_STUCK_AFTER_S)."""
    stuck = Stuck(after_s=stuck_after_s)
    loop = asyncio.get_running_loop()
    while True:
        plan = plan_of()
        if plan is not None:
            seen = await ask(plan)
            if stuck.look(loop.time(), seen):
                log.warning(
                    "pair %s: this member has not streamed for %.0f s while the primary runs "
                    "(its WAL is gone?): reinitializing it from the primary",
                    plan.name, stuck.after_s,
                )  # fmt: skip
                try:
                    log.info("pair %s: reinitialize: %s", plan.name, await reinitialize(plan))
                except httpx.HTTPError as exc:
                    log.warning("pair %s: reinitialize not asked: %s", plan.name, exc)
        await asyncio.sleep(every)
