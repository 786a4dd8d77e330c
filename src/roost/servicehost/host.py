"""The servicehost's brain: which servers run, and what requests reach them by.

Theory of operation: state.json is the truth about what exists; every
server in it is started at `start()` (or adopted, running, from the daemon
before this one: supervised.py) and supervised until `shutdown()`, which
stops them, or `release()`, which leaves them serving for the next daemon.
PostgreSQL is started at `start()` only when state.json says it is needed
(pgdemand.py: a database, a restore, backupd streaming it) or a postmaster
of its cluster is running already (a hand-over); otherwise by the first
request that needs it (`pg_up`, `apps_pg`). Requests for one (app, kind)
hold its lock (`lock`); provisioning an app's services, backing them up
and removing them are provision.py's.

Limits: each app's PostgreSQL role may hold `postgres_connection_limit`
sessions (CONNECTION LIMIT, set at provision and on every existing role at
start, so roles made before the limit existed, or under another value, get
it too); each app's Redis has its maxmemory and eviction policy (redis.py).

Backups (backupsource.py, restores.py): every Redis gets its backup user's
password at provision (or at start, for one made before), the PostgreSQL
backup role its at backupd's first request; both are in state.json.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from roost.netaddr import is_loopback
from roost.servicehost import pgadmin, pgdemand, pgrejoin, retirement
from roost.servicehost.addresses import advertised_host, listen_hosts
from roost.servicehost.backups import backup_name
from roost.servicehost.binaries import Binaries
from roost.servicehost.disk import refusal, usage
from roost.servicehost.layout import Layout
from roost.servicehost.names import BadAppName, new_password, pg_name
from roost.servicehost.pairdb import PairAdmin, PairMember
from roost.servicehost.pgpair import PairPlan
from roost.servicehost.postgres import Postgres
from roost.servicehost.redis import RedisServer
from roost.servicehost.s3 import S3Buckets, ServiceProblem
from roost.servicehost.state import (
    HostState,
    PgCluster,
    Service,
    StoredKind,
    load_state,
    save_state,
)
from roost.servicehost.status import collect
from roost.servicehost.supervised import Server, Servers, Supervised
from roost.servicehost.user import ServiceUser
from roost.settings import Settings
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import Msg, ServiceHostStatusRequest

if TYPE_CHECKING:
    from roost.servicehost.redispairs import RedisPairs

log = logging.getLogger("roost.servicehost")

UP_WAIT_S = 30.0  # how long a request waits for a (re)starting server
LIMITS_RETRY_S = 5.0  # between tries to set existing roles' connection limit


class ServiceError(Exception):
    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


# PostgreSQL keeps whole 16 MB segments for a slot: below two, a receiver a
# moment behind would lose its slot.
MIN_SLOT_WAL_KEEP_MB = 32


def limits_problem(settings: Settings) -> str | None:
    """Why these settings cannot be used for the apps' limits, or None."""
    if settings.postgres_connection_limit < 1:
        return (
            "ROOST_POSTGRES_CONNECTION_LIMIT must be at least 1 "
            f"(got {settings.postgres_connection_limit})"
        )
    if not settings.pair_stuck_after_s > 0:
        return f"ROOST_PAIR_STUCK_AFTER_S must be above 0 (got {settings.pair_stuck_after_s})"
    if (why := pgdemand.start_problem(settings.postgres_start)) is not None:
        return why
    if settings.redis_memory_mb < 1:
        return f"ROOST_REDIS_MEMORY_MB must be at least 1 (got {settings.redis_memory_mb})"
    if settings.pg_slot_wal_keep_mb < MIN_SLOT_WAL_KEEP_MB:
        return (
            f"ROOST_PG_SLOT_WAL_KEEP_MB must be at least {MIN_SLOT_WAL_KEEP_MB} (two 16 MB "
            f"WAL segments: less invalidates a receiver a moment behind; got "
            f"{settings.pg_slot_wal_keep_mb})"
        )
    return None


def free_port(host: str = "127.0.0.1", taken: set[int] | frozenset[int] = frozenset()) -> int:
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port


class ServiceHost:
    def __init__(
        self,
        layout: Layout,
        settings: Settings,
        bins: Binaries,
        user: ServiceUser,
        name: str = "servicehost",
        public_host: str = "",
        backupd_hosts: Sequence[str] = (),
    ) -> None:
        self.name = name
        # The host of its identity (the daemon sets it): its id to the
        # controllers, which tells servicehosts apart ("": its name does).
        self.host_id = ""
        # The address book's backupd hosts: the backup role logs in from there.
        self.backupd_hosts = list(backupd_hosts)
        self.listen = listen_hosts(settings.bind_host, public_host)
        self.layout = layout
        self.settings = settings
        self.bins = bins
        self.user = user
        self.host = advertised_host(settings.services_host, settings.bind_host, public_host)
        # Reached by other hosts (a cluster's servicehost) or by this machine
        # alone (one machine: its PostgreSQL starts on demand, pgdemand.py).
        self.one_machine = is_loopback(public_host or settings.bind_host or "127.0.0.1")
        self.state: HostState = load_state(layout.state_file)
        self.pg: Postgres | None = None
        # One supervisor for every server this host runs (see supervised.py).
        self.sup = Servers(log)
        self.pg_sup: Supervised | None = None
        self.redis: dict[str, tuple[RedisServer, Supervised]] = {}
        # Redis pairs under Sentinel (the daemon sets it in a cluster): None alone.
        self.pairs: RedisPairs | None = None
        # This host's PostgreSQL pair (DATA/pgpair.json, the daemon sets it):
        # apps' databases live there, not in its own PostgreSQL (pairdb.py).
        self.pg_pair: PairPlan | None = None
        self.pair_sup: Supervised | None = None
        # Apps' S3 buckets: one weed server while any app has one (s3.py).
        self.s3 = S3Buckets(self)
        # Every request on an app's service holds its lock (`lock`).
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tg: asyncio.TaskGroup | None = None
        self._limits: asyncio.Task[None] | None = None
        self._rejoin: asyncio.Task[None] | None = None
        self._supervising: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def _save(self) -> None:
        save_state(self.layout.state_file, self.state)

    async def start(self, tg: asyncio.TaskGroup) -> None:
        """initdb if needed, then start PostgreSQL (when needed: pgdemand.py)
        and every app's Redis under `tg`."""
        self._tg = tg
        self._supervising = tg.create_task(self.sup.run())
        self.layout.create(searchable=self.user.dropped)
        self.user.check_reachable(self.layout.root)
        cluster = self.state.postgres
        wanted = self.settings.postgres_port
        if cluster is None:
            cluster = PgCluster(port=wanted or free_port(), password=new_password())
            self.state.postgres = cluster
            self._save()
        elif wanted and wanted != cluster.port:
            cluster.port = wanted
            self._save()
        self.pg = Postgres(
            self.bins, self.layout.postgres, self.layout.logs, self.user, cluster,
            self.listen, slot_wal_keep_mb=self.settings.pg_slot_wal_keep_mb,
        )  # fmt: skip
        self.pg.backupd_hosts = self.backupd_hosts
        self.pg.copies = self.copies()
        if await self.pg.initialize():
            self._save()
        cluster_host = self.pg_pair is not None or self.pairs is not None or not self.one_machine
        why = pgdemand.needed_at_start(self.state, self.settings.postgres_start, cluster_host)
        if not why and await asyncio.to_thread(self.pg.running):
            why = "it is running (a hand-over)"  # adopted, not left unwatched
        if why:
            self._start_pg(why)
        # Replaced for good while away: nothing of the pair runs here again.
        await retirement.check_at_start(self)
        retired = bool(self.state.replaced_by)
        if retired:
            log.error(retirement.said(self.state.replaced_by))
        if self.pg_pair is not None and not retired:
            member = PairMember(self.pg_pair, self.layout.data_dir, self.layout.logs)
            self.pair_sup = Supervised(self.sup, member, self.settings.restart_backoff_max_s)
        self._limits = tg.create_task(self._apply_connection_limits())
        # Its pair member made again from the primary when it cannot stream
        # any more (pgrejoin.py); idle while this host is in no pair.
        self._rejoin = tg.create_task(
            pgrejoin.watch(lambda: self.pg_pair, self.settings.pair_stuck_after_s)
        )
        if self.pairs is not None and not retired:
            self.pairs.start_sentinel()
        for svc in self.state.of_kind("redis") if not retired else []:
            if svc.memory_mb < 1:  # recorded before every Redis had its own limit
                svc.memory_mb = self.settings.redis_memory_mb
                self._save()
            if not svc.backup_password:  # made before backups pulled
                svc.backup_password = new_password()
                self._save()
            self._start_redis(svc)
        if not retired:
            self.s3.start()
        log.info(
            "PostgreSQL on port %d (%s), %d Redis servers; apps connect to %s",
            cluster.port, "started" if self.pg_sup else "not needed yet", len(self.redis),
            self.host,
        )  # fmt: skip

    def _start_pg(self, why: str) -> None:
        """PostgreSQL started (or adopted) and supervised, once."""
        assert self.pg is not None, "start() first"
        if self.pg_sup is None:
            log.info("PostgreSQL starts: %s", why)
            self.pg_sup = Supervised(self.sup, self.pg, self.settings.restart_backoff_max_s)

    @property
    def pg_started(self) -> bool:
        """Whether this daemon started (or adopted) its PostgreSQL."""
        return self.pg_sup is not None

    def copies(self) -> list[tuple[str, str]]:
        """(database, app role): databases restores made for an app (`--to`),
        which its role may open (pg_hba)."""
        return sorted(
            (r.target, pg_name(r.app))
            for r in self.state.restores.values()
            if r.kind == "postgres" and r.step == "swapped" and r.target
        )

    def save(self) -> None:
        """Write state.json (after a change to `state`)."""
        self._save()

    def lock(self, app: str, kind: str) -> asyncio.Lock:
        """The lock every request on the app's `kind` (postgres, redis, data) holds."""
        return self._locks[HostState.key(app, kind)]

    def supervise(self, server: Server) -> Supervised:
        """`server` started and supervised beside the others."""
        return Supervised(self.sup, server, self.settings.restart_backoff_max_s)

    def start_redis(self, svc: Service) -> None:
        self._start_redis(svc)

    async def restart_postgres(self) -> None:
        """PostgreSQL stopped (fast shutdown) and started again under
        supervision, on the cluster's port as state.json now records it."""
        assert self.pg is not None, "start() first"
        if self.pg_sup is not None:
            await self.pg_sup.stop()
        self.pg_sup = Supervised(self.sup, self.pg, self.settings.restart_backoff_max_s)

    async def stop_redis(self, app: str) -> RedisServer | None:
        """Stop the app's Redis (it saves on the way) and forget it until started again."""
        if app not in self.redis:
            return None
        server, sup = self.redis.pop(app)
        await sup.stop()
        return server

    def _start_redis(self, svc: Service) -> tuple[RedisServer, Supervised]:
        assert self._tg is not None, "start() first"
        server = RedisServer(
            self.bins, self.layout.redis(svc.app), self.layout.logs, self.user, svc,
            self.listen,
        )  # fmt: skip
        if self.pairs is not None:
            self.pairs.attach(svc, server)
        sup = Supervised(self.sup, server, self.settings.restart_backoff_max_s)
        self.redis[svc.app] = (server, sup)
        return server, sup

    async def _apply_connection_limits(self) -> None:
        """Give every existing app role the current connection limit, once
        PostgreSQL is up (retried until it is; cancelled by `shutdown`)."""
        limit = self.settings.postgres_connection_limit
        while True:
            roles = [s.username for s in self.state.of_kind("postgres")]
            if not roles:
                return
            try:
                changed = await pgadmin.set_connection_limits(await self._apps_pg(), roles, limit)
            except (ServiceError, psycopg.Error, OSError) as exc:
                log.warning("cannot set the apps' connection limit yet (%s); retrying", exc)
                await asyncio.sleep(LIMITS_RETRY_S)
                continue
            if changed:
                log.info("connection limit %d set on %d app role(s)", limit, changed)
            return

    async def shutdown(self) -> None:
        """Stop every server gracefully (in parallel) and wait for them."""
        await self._end(self.sup.stop)

    async def release(self) -> None:
        """Leave every server serving, for the next daemon to adopt (a hand-over)."""
        await self._end(self.sup.release)

    async def _end(self, how: Callable[[], None]) -> None:
        for task in (self._limits, self._rejoin):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])  # (its cancellation is not ours to raise)
        how()
        if self._supervising is not None:
            await self._supervising

    # ------------------------------------------------------------ requests

    def entries(self) -> list[Entry]:
        """The buckets' requests and the status, for the servicehost's table
        (an app's PostgreSQL and Redis: provision.py)."""

        async def status(_msg: ServiceHostStatusRequest) -> Msg:
            return await collect(self, self.name)

        errors = (ServiceError, BadAppName, ServiceProblem)
        return [
            *self.s3.entries(errors),
            on(ServiceHostStatusRequest, refusing(status, *errors)),
        ]

    def check_disk(self) -> None:
        """ServiceError when the disk is below the free-space threshold."""
        free, total = usage(self.layout.root)
        why = refusal(free, total, self.settings.min_free_disk_fraction)
        if why is not None:
            raise ServiceError(why)

    async def pg_up(self) -> Postgres:
        return await self._pg_up()

    async def apps_pg(self) -> pgadmin.Postgres:
        """Where apps' databases are (the pair's primary on a pair)."""
        return await self._apps_pg()

    async def _apps_pg(self) -> pgadmin.Postgres:
        """Where apps' databases are: the pair's primary (pairdb.PairAdmin),
        else this host's own PostgreSQL once it is up."""
        if self.pg_pair is not None:
            return PairAdmin(self.pg_pair, self.bins)
        return await self._pg_up()

    async def _pg_up(self) -> Postgres:
        if self.pg is not None:
            self._start_pg("needed now")
        sup, pg = self.pg_sup, self.pg
        if sup is None or pg is None or not await sup.wait_up(UP_WAIT_S):
            state = sup.state if sup else "stopped"
            last = f": {sup.last_error}" if sup and sup.last_error else ""
            raise ServiceError(f"PostgreSQL is not up ({state}{last})", retryable=True)
        return pg

    async def redis_up(self, app: str) -> RedisServer:
        server, sup = self.redis[app]
        if not await sup.wait_up(UP_WAIT_S):
            last = f": {sup.last_error}" if sup.last_error else ""
            raise ServiceError(f"Redis of {app} is not up ({sup.state}{last})", retryable=True)
        return server

    def backup_path(self, app: str, kind: StoredKind) -> Path:
        d = self.layout.backups(app)
        d.mkdir(mode=0o700, exist_ok=True)
        existing = {p.name for p in d.iterdir()}
        return d / backup_name(kind, time.time(), existing)
