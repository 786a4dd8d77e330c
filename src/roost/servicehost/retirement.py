"""Servicehosts replaced for good, as a servicehost learns of them (issue 16).

Theory of operation. `roost servicehost replace OLD NEW` retires OLD
(controller/retired.py). Two things follow here:

- Every servicehost, in OLD's pair or not, stops asking and counting OLD's
  sentinel: each controller answers a status push with the retired
  addresses (`RetiredHosts`), which are kept in state.json (`learn`, pure)
  and left out of the sentinels `RedisPairs` asks (redispairs.py). When one
  is new, the masters this host holds are reset (`SENTINEL RESET`), so the
  sentinels forget OLD's and no longer count it among those that must
  agree: a dead sentinel counted would let one more lost host stop every
  failover of those masters.
- OLD itself, should it come back, must not slip into the pair again
  (Patroni would register it in etcd and make it a replica, its Redis
  copies would follow the master and be found by the sentinels). Before
  running anything of its pair it reads etcd, where the survivor recorded
  who replaced it (pgreplace.mark_retired); and a controller's answer that
  names it replaced stops what it still runs of the pair (its Patroni
  member, its Redis copies, its sentinel). Either way state.json keeps
  `replaced_by`, so later starts run none of them, and every start says so
  in the log. Its data stays on disk, untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from roost.servicehost import pgreplace
from roost.wire.messages import RetiredHosts

if TYPE_CHECKING:
    from roost.servicehost.host import ServiceHost

log = logging.getLogger("roost.servicehost")


def learn(known: Iterable[str], told: Iterable[str]) -> tuple[list[str], list[str]]:
    """(every retired address now, those not known before) (pure). The
    controllers' list only grows; one missing from an answer is kept."""
    before = set(known)
    now = before | set(told)
    return sorted(now), sorted(now - before)


def said(replaced_by: str) -> str:
    return (
        f"this servicehost was replaced for good by {replaced_by} (roost servicehost "
        "replace): it no longer belongs to its pair and runs nothing of it (its "
        "PostgreSQL member, Redis copies and sentinel); its data is left on disk"
    )


async def check_at_start(host: ServiceHost) -> None:
    """Before anything of the pair runs: was this servicehost replaced while
    it was away? (etcd, where its pair's survivor recorded it; an etcd that
    does not answer is taken as no: Patroni cannot join without it either.)"""
    plan = host.pg_pair
    if host.state.replaced_by or plan is None or not plan.host:
        return
    try:
        by = await pgreplace.replaced_by(plan, plan.host)
    except OSError as exc:
        log.warning(
            "pair %s: could not ask etcd whether this host was replaced: %s", plan.name, exc
        )
        return
    if by:
        host.state.replaced_by = by
        host.save()


async def told(host: ServiceHost, reply: RetiredHosts) -> None:
    """A controller's answer to the status push (module docstring)."""
    state = host.state
    if reply.replaced_by and not state.replaced_by:
        state.replaced_by = reply.replaced_by
        host.save()
        log.error(said(reply.replaced_by))
        await stop_pair(host)
    state.retired, new = learn(state.retired, reply.addresses)
    if new:
        host.save()
        log.info("servicehost(s) %s replaced for good: their sentinels are no longer asked", new)
        pairs = host.pairs
        if pairs is not None and not state.replaced_by:
            for app in sorted(a for a, h in pairs.health.items() if h.role == "master"):
                await pairs.reset(app)


async def stop_pair(host: ServiceHost) -> None:
    """Stop what this (replaced) servicehost runs of its pair."""
    if host.pair_sup is not None:
        await host.pair_sup.stop()
        host.pair_sup = None
    for app in sorted(host.redis):
        await host.stop_redis(app)
    pairs = host.pairs
    if pairs is not None and pairs.sentinel is not None:
        await pairs.sentinel.stop()
        pairs.sentinel = None
