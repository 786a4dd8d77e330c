"""`roost servicehost replace OLD NEW`: a servicehost lost for good, and
another taking its place in every pair it was in (issue 16).

Theory of operation. Everything that can be refused is refused before
anything changes (`plan`, pure, over the servicehosts answering now and the
pairs' records): OLD still answering (it is not lost: two members would
claim one place), NEW not answering or unknown, NEW already in a pair or
holding an app's service, OLD in no pair, or OLD's partner silent too (no
primary to copy from). Then, for each pair OLD was in (`replace`):

1. the surviving member (`PairReplace`) checks again that OLD's Patroni
   does not answer, removes OLD's member from the pair's Patroni cluster
   and records the pair with NEW; it answers with NEW's plan, passwords
   and all, which goes to NEW and is never kept here;
2. NEW (`PairJoin`) runs its Patroni member, which Patroni bootstraps as a
   streaming standby of the primary by pg_basebackup (the synchronous
   standby once caught up);
3. the records (`replace_pair_member`): the pair names NEW, bindings OLD
   held are held by the survivor, whose copies serve now, and OLD is
   retired (`retired.py`: no controller surveys or lists it again, every
   servicehost stops asking its sentinel, and it is refused if it comes
   back);
4. each app's Redis on the pair gets its replica on NEW: the survivor's
   copy (a provision there answers with what its replica needs, as when
   the app's Redis was made) is provisioned on NEW, which makes it the
   master's replica (a full resync) and has every sentinel reset that
   master, forgetting OLD's copy and sentinel.

Each step is idempotent, so the command repeated after a failure half-way
finishes the job. A Redis copy that could not be made is named in the
answer, not fatal: its master serves, and the servicehost reports it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from roost.controller import redispair
from roost.controller.astore import AsyncStore
from roost.controller.servicehosts import ServiceHosts
from roost.controller.store_pairs import PairRow
from roost.wire.messages import (
    Error,
    Ok,
    PairJoin,
    PairPlanned,
    PairReplace,
    ServiceCredentials,
    ServiceHostStatus,
    ServiceProvision,
)
from roost.wire.rpc import RemoteError, RpcTimeout

log = logging.getLogger("roost.controller")

PAIR_TIMEOUT_S = 30.0
PROVISION_TIMEOUT_S = 40.0


class ReplaceRefused(Exception):
    """The replacement cannot be made; nothing was changed."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PairChange:
    before: PairRow
    survivor: str  # the other member's host id
    old_address: str
    new_address: str


def plan(
    old: str,
    new: str,
    reports: Mapping[str, ServiceHostStatus],
    addresses: Mapping[str, str],
    pairs: list[PairRow],
) -> list[PairChange]:
    """The pairs OLD is in, each to get NEW in its place (pure), or
    ReplaceRefused saying why not. `reports`: the servicehosts answering
    now (host id -> status); `addresses`: host id -> where it answers."""
    if old == new:
        raise ReplaceRefused(f"{old} cannot replace itself", 422)
    if old in reports:
        raise ReplaceRefused(
            f"servicehost {old} still answers: a servicehost is replaced only once it is "
            "lost for good (stop it first)"
        )
    if new not in reports or not addresses.get(new):
        known = ", ".join(sorted(reports)) or "none"
        raise ReplaceRefused(f"no servicehost answers as {new} (answering: {known})", 404)
    taken = next((p.name for p in pairs if new in p.hosts), "")
    if taken:
        raise ReplaceRefused(f"servicehost {new} is already in pair {taken}")
    apps = sorted({s.app for s in reports[new].servers if s.app})
    if apps:
        raise ReplaceRefused(
            f"servicehost {new} holds services of {', '.join(apps)}: only one holding none "
            "takes a place in a pair"
        )
    changes = []
    for p in pairs:
        if old not in p.hosts:
            continue
        survivor = next(h for h in p.hosts if h != old)
        if survivor not in reports:
            raise ReplaceRefused(
                f"pair {p.name}: its other servicehost {survivor} does not answer either; "
                "there is no copy to make a new standby from",
                503,
            )
        old_address = p.addresses[p.hosts.index(old)]
        changes.append(PairChange(p, survivor, old_address, addresses[new]))
    if not changes:
        raise ReplaceRefused(f"servicehost {old} is in no pair: nothing to replace", 404)
    return changes


@dataclass
class Replaced:
    pairs: list[str] = field(default_factory=list)
    apps: list[int] = field(default_factory=list)  # the apps on those pairs
    redis: list[str] = field(default_factory=list)  # apps whose Redis has its replica on NEW
    problems: list[str] = field(default_factory=list)


async def replace(store: AsyncStore, hosts: ServiceHosts, old: str, new: str) -> Replaced:
    """The whole replacement (module docstring); ReplaceRefused before any
    change, RuntimeError when a servicehost refused or failed a step (the
    command may be repeated to finish)."""
    reports = await hosts.survey()
    changes = plan(old, new, reports, hosts.addresses(), await store.service_pairs())
    done = Replaced()
    placed = await store.app_pair_map(None)
    bindings = await store.service_bindings(None)
    for ch in changes:
        name = ch.before.name
        survivor = await hosts.client_of(ch.survivor)
        try:
            reply = await survivor.call(
                PairReplace(pair=name, old=ch.old_address, new=ch.new_address),
                timeout=PAIR_TIMEOUT_S,
                tries=1,
            )
        except (RpcTimeout, RemoteError) as exc:
            raise RuntimeError(f"pair {name}: {ch.survivor} did not answer: {exc}") from None
        if isinstance(reply, Error):
            raise ReplaceRefused(f"pair {name}: {ch.survivor} refused: {reply.message}")
        if not isinstance(reply, PairPlanned):
            raise RuntimeError(f"pair {name}: {ch.survivor} answered {type(reply).__name__}")
        joined = await (await hosts.client_of(new)).call(
            PairJoin(plan=reply.plan), timeout=PAIR_TIMEOUT_S, tries=1
        )
        if not isinstance(joined, Ok):
            why = joined.message if isinstance(joined, Error) else type(joined).__name__
            raise RuntimeError(f"pair {name}: {new} did not join it: {why}")
        await store.replace_pair_member(name, old, new, ch.new_address, ch.survivor, ch.old_address)
        log.info("pair %s: servicehost %s takes %s's place", name, new, old)
        done.pairs.append(name)
        apps = sorted(i for i, p in placed.items() if p == name)
        done.apps += apps
        on_pair = {r.app_id: r for r in bindings if r.app_id in apps and r.kind == "redis"}
        for row in on_pair.values():
            app = (await store.app_by_id(row.app_id)).name
            try:
                await _redis_replica(hosts, ch.survivor, new, app)
                done.redis.append(app)
            except (RpcTimeout, RemoteError, RuntimeError) as exc:
                done.problems.append(f"{app}'s Redis has no replica on {new} yet: {exc}")
    return done


async def _redis_replica(hosts: ServiceHosts, survivor: str, new: str, app: str) -> None:
    """The survivor's copy of the app's Redis, made again on NEW as its replica."""
    reply = await (await hosts.client_of(survivor)).call(
        ServiceProvision(app=app, kind="redis"), timeout=PROVISION_TIMEOUT_S
    )
    if not isinstance(reply, ServiceCredentials) or reply.copy is None:
        why = reply.message if isinstance(reply, Error) else "no copy to make"
        raise RuntimeError(f"{survivor} answered: {why}")
    try:
        await redispair.provision_copy(await hosts.client_of(new), app, reply.copy)
    except TypeError as exc:
        raise RuntimeError(str(exc)) from None
