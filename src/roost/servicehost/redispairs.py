"""The servicehost's side of Redis pairs: this host's sentinel, each copy's
role at start, the sentinels told of new masters, and replication watched.

Theory of operation. Pairs are on when the data directory holds the
cluster's sentinel password (DATA/keys/sentinel.key, the same on every
servicehost and sentinel host); without it, on one machine, nothing here
runs and every app's Redis is alone, as before. The sentinels are on the
hosts of the address book's servicehosts and controllers, all on one port.

- Provision: the first servicehost makes the app's Redis a master (the
  replica user's password joins its secrets) and answers with a
  `RedisCopy`, which the controller passes to the pair's other servicehost
  (ServiceProvision.copy_of): it makes the same server, as that master's
  replica. Once the master answers, every sentinel is told to watch it.
- Start: a copy's role is decided just before each launch (a restart after
  a crash too), by redisrepl.start_master over what the sentinels agree on
  now; the servicehost never changes the role of a running copy.
- Watch (every WATCH_INTERVAL_S): each copy's INFO replication gives its
  role, peer and lag (`health`, in the status push); a problem (a master
  without a streaming replica, one far behind, a replica cut from its
  master) is logged when it appears and when it clears. A master's view
  leaves out the replicas this host's sentinel holds down (SENTINEL
  REPLICAS' flags): the master lists a dead host's replica as online
  until its repl-timeout, a minute. A master with no problem of its own
  is then judged as the sentinels see it (sentinel.failover_problem):
  one with no replica they could promote cannot fail over. The role seen is
  recorded in state.json (the fallback when no sentinel answers at start),
  and a master some sentinel does not watch (one restarted without its
  file, one that was down at provision) is registered again.
- Removal: the sentinels forget the master first, or they would promote
  the replica when the master stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from roost.servicehost import redisrepl, sentinel, sentinelproc
from roost.servicehost.names import new_password
from roost.servicehost.redis import ADMIN_USER, RedisServer
from roost.servicehost.redisrepl import Replication, ReplicationView
from roost.servicehost.resp import RedisError
from roost.servicehost.sentinel import Monitor, SentinelSpec, master_name
from roost.servicehost.sentinelproc import Address, SentinelServer
from roost.servicehost.state import Service
from roost.servicehost.supervised import Supervised
from roost.wire.bootstrap import endpoint_host
from roost.wire.cluster import ClusterConfig
from roost.wire.messages import RedisCopy

if TYPE_CHECKING:
    from roost.servicehost.host import ServiceHost

log = logging.getLogger("roost.servicehost")

SENTINEL_KEY = "sentinel.key"
SENTINEL_ROLES = ("servicehost", "controller")
WATCH_INTERVAL_S = 5.0
_ERRORS = (OSError, RedisError, TimeoutError, asyncio.IncompleteReadError)


@dataclass(frozen=True)
class PairConfig:
    sentinels: tuple[Address, ...]
    password: str
    port: int


def sentinel_hosts(cluster: ClusterConfig) -> list[str]:
    """Where the sentinels run: every servicehost's and controller's host."""
    return sorted({endpoint_host(ep.address) for r in SENTINEL_ROLES for ep in cluster.of(r)})


def live_sentinels(sentinels: tuple[Address, ...], lost: Iterable[str]) -> tuple[Address, ...]:
    """The sentinels to count and ask: every one the address book names but
    those of servicehosts lost for good and replaced (pure). Counted, a
    lost one left every master it watched reporting "only 3 of 4
    sentinels watch it" for good once the sentinels were reset."""
    gone = set(lost)
    return tuple(a for a in sentinels if a[0] not in gone)


def other_sentinels(sentinels: tuple[Address, ...], own: Iterable[str]) -> tuple[Address, ...]:
    """The sentinels but this host's (pure; `own`: the addresses this host's
    sentinel listens on or announces): the whole-pair check asks this
    host's own on loopback, and asking it again by its address told
    nothing new. All of them when none is this host's (an address book
    that names the host otherwise)."""
    mine = set(own)
    return tuple(a for a in sentinels if a[0] not in mine)


def load_config(data_dir: Path, cluster: ClusterConfig, port: int) -> PairConfig | None:
    """The pairs' configuration, or None on one machine (module docstring)."""
    try:
        password = (data_dir / "keys" / SENTINEL_KEY).read_text().strip()
    except FileNotFoundError:
        return None
    hosts = sentinel_hosts(cluster)
    return PairConfig(tuple((h, port) for h in hosts), password, port)


@dataclass(frozen=True)
class Health:
    """One copy's replication, for the status push."""

    role: str  # "master" or "replica"
    peer: str  # the replica (of a master) or the master (of a replica), "host:port"
    lag_bytes: int
    problem: str


def health_of(view: ReplicationView, down: frozenset[tuple[str, int]] = frozenset()) -> Health:
    """One copy's health (pure). `down`: the replicas this host's sentinel
    holds down (sentinel.replicas_down), left out of a master's view: its
    INFO lists a replica whose host died as online, with no lag while
    nothing is written, until its repl-timeout (60 s)."""
    if view.role == "slave":
        return Health("replica", f"{view.master_host}:{view.master_port}", 0, redisrepl.judge(view))
    view = replace(view, replicas=tuple(r for r in view.replicas if (r.host, r.port) not in down))
    peers = ",".join(f"{r.host}:{r.port}" for r in view.replicas)
    problem = redisrepl.judge(view)
    if down and not any(r.state == "online" for r in view.replicas):
        # Named the same before and after the master drops the replica, so
        # the controller raises one event for the loss, not two.
        names = ", ".join(f"{h}:{p}" for h, p in sorted(down))
        problem = (
            f"master: no replica is up: the sentinels hold {names} down "
            "(its writes exist on this host only)"
        )
    return Health("master", peers, view.lag_bytes(), problem)


class RedisPairs:
    def __init__(self, host: ServiceHost, config: PairConfig) -> None:
        self.host = host
        self.config = config
        self.health: dict[str, Health] = {}
        self.sentinel: Supervised | None = None

    @property
    def sentinels(self) -> tuple[Address, ...]:
        """The address book's sentinels, less those of the lost servicehosts
        this host's pair replaced (pgpair.PairPlan.lost) and of every one
        the controllers say was replaced (state.json's `retired`,
        servicehost/retirement.py), read each time: a replacement changes
        them while the servicehost runs."""
        plan = self.host.pg_pair
        lost = [*(plan.lost if plan is not None else ()), *self.host.state.retired]
        return live_sentinels(self.config.sentinels, lost)

    def start_sentinel(self) -> None:
        host = self.host
        spec = SentinelSpec(
            self.config.port, host.listen, host.host, self.config.password,
            host.layout.root / "sentinel",
        )  # fmt: skip
        server = SentinelServer(host.bins.redis_server, spec, host.layout.logs, host.user)
        self.sentinel = Supervised(host.sup, server, host.settings.restart_backoff_max_s)

    # ------------------------------------------------------------ a copy's role

    def attach(self, svc: Service, server: RedisServer) -> None:
        """Decide the copy's role before each launch (module docstring)."""
        if not svc.replica_password:  # made alone, before pairs
            svc.replica_password = new_password()
            self.host.save()

        async def place() -> None:
            await self._place(svc, server)

        server.before_launch = place

    async def _place(self, svc: Service, server: RedisServer) -> None:
        own = (self.host.host, svc.port)
        agreed = await sentinelproc.ask_master(
            self.sentinels, self.config.password, master_name(svc.app)
        )
        follow = redisrepl.start_master(
            agreed, own, (svc.replica_of, svc.port), recorded_master=not svc.replica_of
        )
        server.replication = Replication(self.host.host, svc.replica_password, follow)
        self._record(svc, follow[0] if follow else "")
        log.info(
            "%s starts as %s", server.name, f"replica of {follow[0]}:{follow[1]}" if follow
            else "master",
        )  # fmt: skip

    def _record(self, svc: Service, master_host: str) -> None:
        if svc.replica_of != master_host:
            svc.replica_of = master_host
            self.host.save()

    def copy(self, svc: Service) -> RedisCopy:
        """What the partner needs to run this Redis as its replica."""
        return RedisCopy(
            port=svc.port, memory_mb=svc.memory_mb, password=svc.password,
            admin_password=svc.admin_password, backup_password=svc.backup_password,
            replica_password=svc.replica_password, master_host=self.host.host,
        )  # fmt: skip

    @staticmethod
    def from_copy(app: str, copy: RedisCopy) -> Service:
        """The partner's copy of the service, recorded as the master's replica."""
        return Service(
            app=app, kind="redis", port=copy.port, password=copy.password,
            memory_mb=copy.memory_mb, admin_password=copy.admin_password,
            backup_password=copy.backup_password, replica_password=copy.replica_password,
            replica_of=copy.master_host,
        )  # fmt: skip

    def master_host(self, svc: Service) -> str:
        """Where this app's Redis master is, as this copy knows it."""
        h = self.health.get(svc.app)
        if h is not None and h.role == "replica":
            return h.peer.rsplit(":", 1)[0]
        return svc.replica_of or self.host.host

    # ------------------------------------------------------------ the sentinels

    def _monitor(self, svc: Service) -> Monitor:
        return Monitor(master_name(svc.app), self.host.host, svc.port, ADMIN_USER,
                       svc.admin_password)  # fmt: skip

    async def register(self, svcs: list[Service], auth: bool = True) -> None:
        """Tell every sentinel to watch these masters (this host's copies)."""
        if not svcs:
            return
        failed = await sentinelproc.register(
            self.sentinels, self.config.password, [self._monitor(s) for s in svcs], auth
        )
        for addr, why in failed.items():
            log.warning("sentinel %s:%d not told of %d master(s): %s", *addr, len(svcs), why)

    async def unregister(self, app: str) -> None:
        failed = await sentinelproc.unregister(
            self.sentinels, self.config.password, master_name(app)
        )
        for addr, why in failed.items():
            log.warning("sentinel %s:%d did not forget %s: %s", *addr, app, why)

    async def reset(self, app: str) -> None:
        """Every sentinel forgets the replicas it knew of the app's master
        and finds them again: a replica made in a lost servicehost's place
        (controller/replace.py) leaves no trace of the lost one's copy."""
        failed = await sentinelproc.reset(self.sentinels, self.config.password, master_name(app))
        for addr, why in failed.items():
            log.warning("sentinel %s:%d did not reset %s: %s", *addr, app, why)

    # ------------------------------------------------------------ the watch

    async def look(self) -> None:
        """One pass of the watch (module docstring)."""
        masters: list[Service] = []
        for app, (server, sup) in sorted(self.host.redis.items()):
            if not sup.is_up:
                continue
            try:
                view = await server.replication_view()
            except _ERRORS:
                continue
            if view.role == "master":
                seen, why = await self._own_view(app)
                down = sentinel.replicas_down(seen.replicas) if seen is not None else frozenset()
                new = health_of(view, down)
                if not new.problem:
                    problem = why if seen is None else await self._failover_problem(app, seen)
                    new = replace(new, problem=problem)
            else:
                new = health_of(view)
            old = self.health.get(app)
            self.health[app] = new
            if new.problem and (old is None or old.problem != new.problem):
                log.warning("%s: %s", server.name, new.problem)
            elif old is not None and old.problem and not new.problem:
                log.info("%s: replication is healthy again (%s)", server.name, new.role)
            svc = server.svc
            if view.role == "slave":
                self._record(svc, view.master_host)
            else:
                self._record(svc, "")
                masters.append(svc)
        await self.register(masters, auth=False)

    async def _own_view(self, app: str) -> tuple[sentinel.MasterSeen | None, str]:
        """This host's sentinel's view of the app's master (on loopback), or
        None and why there is none."""
        try:
            return await self._view_at(("127.0.0.1", self.config.port), app), ""
        except RedisError as exc:
            return None, f"this host's sentinel refuses: {exc}"
        except _ERRORS as exc:
            return None, f"this host's sentinel does not answer ({type(exc).__name__})"

    async def _view_at(self, addr: Address, app: str) -> sentinel.MasterSeen:
        """The sentinel at `addr`'s SENTINEL MASTER fields and SENTINEL
        REPLICAS entries for the app's master ({} and none when it does not
        watch it); raises what the client raises otherwise."""
        name = master_name(app)
        async with sentinelproc.client(addr, self.config.password) as r:
            try:
                flat = await r.call("SENTINEL", "MASTER", name)
                replicas = await r.call("SENTINEL", "REPLICAS", name)
            except RedisError as exc:
                if "No such master" in str(exc):
                    return sentinel.MasterSeen({})
                raise
        fields = dict(zip(flat[::2], flat[1::2], strict=False))
        return sentinel.MasterSeen(fields, sentinel.replicas_seen(replicas))

    async def _failover_problem(self, app: str, own: sentinel.MasterSeen) -> str:
        """What keeps the sentinels from failing this master over: as this
        host's sentinel sees it (`own`), then as each other sentinel does
        (each asked once)."""
        problem = sentinel.failover_problem(own, len(self.sentinels))
        if problem:
            return problem
        # This host's sentinel was just asked (on loopback): only the others.
        ask = other_sentinels(self.sentinels, {self.host.host, *self.host.listen})
        others = await asyncio.gather(*(self._other_view(addr, app) for addr in ask))
        seen = {addr[0]: got for addr, got in zip(ask, others, strict=True)}
        return sentinel.pair_failover_problem(seen, len(self.sentinels))

    async def _other_view(self, addr: Address, app: str) -> sentinel.MasterSeen | None:
        """Another sentinel's view (`_view_at`), None when it does not answer."""
        try:
            return await self._view_at(addr, app)
        except _ERRORS:
            return None

    async def watch_loop(self) -> None:
        while True:
            try:
                await self.look()
            except Exception:  # a failed look must never take the servers down
                log.exception("redis replication watch failed")
            await asyncio.sleep(WATCH_INTERVAL_S)
