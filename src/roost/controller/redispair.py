"""The controller's part in each app's Redis pair (issue 16).

In a cluster each app's Redis runs on both servicehosts of its pair, a
master and its replica, and Redis Sentinel decides which is which (the
servicehost's redispairs.py). The controller:

- passes the copy on: the servicehost that makes an app's Redis answers
  with what its partner needs to run the replica (ServiceCredentials.copy,
  the server's own passwords); the controller sends it to the partner
  (`provision_copy`) and never stores or shows it (`without_copy`);
- shows the pair (`replication`, pure): which copy is master and which
  replica, from every servicehost's last status push, the master's lag
  and any problem either copy reports;
- raises a platform event when a copy reports a replication problem (a
  replica gone, far behind, cut from its master) and again when it clears
  (`ReplicaWatch`, pure: once per problem per copy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from roost.controller.astore import AsyncStore
from roost.controller.store import NotFound
from roost.wire.messages import (
    RedisCopy,
    ServiceCredentials,
    ServiceHostStatus,
    ServiceProvision,
)
from roost.wire.rpc import RpcClient

log = logging.getLogger("roost.controller")

EVENT = "redis-replication"
PROVISION_TIMEOUT_S = 40.0
# A servicehost pushes its status every 5 s: one older than this is from a
# host that is down (or cut off), and says nothing of the pair now.
MAX_AGE_S = 20.0


def without_copy(creds: ServiceCredentials) -> ServiceCredentials:
    """The credentials to store and show: the partner's secrets taken out."""
    return msgspec.structs.replace(creds, copy=None) if creds.copy is not None else creds


def stored(creds: ServiceCredentials) -> dict[str, Any]:
    """The credentials' fields as the state database keeps them (sealed):
    not even an empty `copy`, since a controller older than the pairs opens
    them as ServiceCredentials(**fields)."""
    return {f: getattr(creds, f) for f in creds.__struct_fields__ if f != "copy"}


async def provision_copy(partner: RpcClient, app: str, copy: RedisCopy) -> ServiceCredentials:
    """Make the replica on the pair's other servicehost (idempotent there)."""
    reply = await partner.call(
        ServiceProvision(app=app, kind="redis", memory_mb=copy.memory_mb, copy_of=copy),
        timeout=PROVISION_TIMEOUT_S,
    )
    if not isinstance(reply, ServiceCredentials):
        raise TypeError(f"servicehost answered {type(reply).__name__} to a Redis copy")
    return without_copy(reply)


def partner(
    holder: str, answering: Iterable[str], configured: int, pair: Sequence[str] = ()
) -> str:
    """The other servicehost of the holder's pair ("" when none is known).

    `pair`: the app's pair's two servicehosts, as the pairs' record names
    them (store_pairs.py). Without one, two servicehosts make the pair; with
    more and no record, no copy is guessed."""
    if holder in pair:
        return next((h for h in pair if h != holder), "")
    others = [h for h in answering if h != holder]
    return others[0] if configured == 2 and len(others) == 1 else ""


def replication(
    reports: Iterable[ServiceHostStatus], app: str, now: float, max_age_s: float = MAX_AGE_S
) -> dict[str, Any]:
    """The app's Redis pair as `roost services info` shows it ({} alone),
    from the reports sent in the last `max_age_s` (a dead host's last one
    would name it master still)."""
    rows = [
        (r, s)
        for r in reports
        if now - r.sent_at <= max_age_s
        for s in r.servers
        if s.app == app and s.kind == "redis" and s.redis_role
    ]
    if not rows:
        return {}
    out: dict[str, Any] = {"redis_master": "", "redis_replica": "", "redis_lag_bytes": 0}
    problems = []
    for r, s in sorted(rows, key=lambda rs: rs[1].redis_role):
        where = f"{r.host_id or r.host}:{s.port}"
        if s.redis_role == "master":
            out["redis_master"] = where
            out["redis_lag_bytes"] = s.redis_lag_bytes
        else:
            out["redis_replica"] = where
        if s.redis_problem:
            problems.append(f"{r.host_id or r.host}: {s.redis_problem}")
    out["redis_problem"] = "; ".join(problems)
    return out


@dataclass(frozen=True)
class Seen:
    app: str
    host: str
    problem: str  # "" when it cleared


class ReplicaWatch:
    """Which copies' problems were raised already (module docstring)."""

    def __init__(self) -> None:
        self._raised: dict[tuple[str, str], str] = {}  # (host, app) -> problem

    def look(self, host: str, report: ServiceHostStatus) -> list[Seen]:
        """What changed in `host`'s Redis copies since its last report."""
        now: Mapping[str, str] = {
            s.app: s.redis_problem for s in report.servers if s.kind == "redis" and s.redis_role
        }
        out = []
        for key in [k for k in self._raised if k[0] == host]:
            app = key[1]
            if app not in now:  # removed, or alone now: nothing to say
                del self._raised[key]
            elif not now[app]:
                del self._raised[key]
                out.append(Seen(app, host, ""))
        for app, problem in sorted(now.items()):
            if problem and self._raised.get((host, app)) != problem:
                self._raised[(host, app)] = problem
                out.append(Seen(app, host, problem))
        return out


def message(seen: Seen) -> str:
    if seen.problem:
        return f"Redis of {seen.app} on servicehost {seen.host}: {seen.problem}"
    return f"Redis of {seen.app} on servicehost {seen.host}: replication healthy again"


async def raise_events(
    watch: ReplicaWatch, store: AsyncStore, host: str, report: ServiceHostStatus
) -> None:
    """The lease holder's events for what `host` reports (ReplicaWatch)."""
    for seen in watch.look(host, report):
        said = message(seen)
        (log.warning if seen.problem else log.info)("%s", said)
        try:
            app_id: int | None = (await store.app(seen.app)).id
        except NotFound:
            app_id = None
        try:
            await store.add_event(EVENT, said, app_id)
        except Exception:  # an event that cannot be stored must not fail the push
            log.exception("storing event %s failed", EVENT)
