"""What backupd pulls from, over the wire: servicehosts, gateways, controllers.

backupd asks; nothing it backs up ever sends it anything unasked, nor holds
a credential to a repository. Each servicehost is asked on its own endpoint
(`BackupSource`: how to reach its PostgreSQL and each Redis, which apps have
a data directory, its state); gateways for git bundles; a controller for the
platform's own state. The last answer of each servicehost is kept, so the
schedule knows what exists and a restore knows where an app's data lives,
even while a host is briefly silent.

A refresh asks every servicehost at once, except the two of a pair, asked
one after the other (`ask_groups`): each makes and grants the backup role
on the pair's one primary. Refreshes never overlap (a capture's and the
loop's). A servicehost that refused is remembered (`unanswered`), so a
capture that misses what it was asked for asks it again before giving up
(`ask_again`), and an app's missing database says which servicehost did
not answer and since when (`missing`), not only that there is none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from roost.backups.platformindex import INDEX_FILE, index_file
from roost.backups.schedule import Sources
from roost.wire.bootstrap import endpoint_host
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.messages import (
    BackupEvent,
    BackupKind,
    BackupSource,
    BackupSourceRequest,
    BucketArchive,
    BucketPull,
    BucketRestore,
    DataArchive,
    DataPull,
    DataRestore,
    HostRestoreApp,
    Msg,
    PgSource,
    PlatformSnapshot,
    PlatformSnapshotRequest,
    RedisRestore,
    RedisSource,
    RepoBundle,
    RepoBundleRequest,
    RepoRestore,
    ServiceHostRestore,
    ServiceHostRestored,
    ServiceRestoreReady,
    ServiceRestoreStep,
)
from roost.wire.node import Node
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.backups")

ASK_TIMEOUT_S = 30.0
# A data directory or a repository travels as one message: minutes when big.
PULL_TIMEOUT_S = 1800.0
RESTORE_STEP_TIMEOUT_S = 1800.0


class SourceError(Exception):
    """A source could not be asked, or refused (the message says which and why;
    `refused`: it answered with an error, so asking again may do)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class Unanswered:
    """A servicehost whose last ask failed: since when, why, and whether it
    refused (answered with an error) rather than stayed silent."""

    since: float
    why: str
    refused: bool


def ask_groups(addresses: Iterable[str], seen: Mapping[str, BackupSource]) -> list[list[str]]:
    """The servicehosts to ask, as groups asked at once, each group's members
    one after the other: the members of one pair share a group, every other
    servicehost is a group of its own (module doc). A pair's members are
    those whose answer named it, and those on the hosts any answer names as
    its members (one not heard yet). Pure."""
    pair_of: dict[str, str] = {}  # a member's host -> its pair
    for src in seen.values():
        if src.pg_pair is not None:
            for h in src.pg_pair.host.split(","):
                pair_of[h.strip()] = src.pg_pair.pair
    groups: dict[str, list[str]] = {}
    for address in addresses:
        heard = seen.get(address)
        pair = heard.pg_pair.pair if heard is not None and heard.pg_pair is not None else ""
        pair = pair or pair_of.get(endpoint_host(address), "")
        groups.setdefault(f"pair {pair}" if pair else address, []).append(address)
    return list(groups.values())


def ask_again(
    wanted: Collection[BackupKind], have: Collection[BackupKind], refused: Collection[str]
) -> bool:
    """Whether a capture asks the servicehosts that refused once more before
    it goes on: one of them may hold what it was asked for (a database
    added a moment ago) and is missing (`wanted` empty: everything the app
    has, which a refusal may hide). Pure."""
    return bool(refused) and (not wanted or not set(wanted) <= set(have))


def missing(app: str, what: str, unanswered: Mapping[str, Unanswered], now: float) -> str:
    """Why `app`'s `what` ("database", "Redis", ...) cannot be backed up: none
    is listed by the servicehosts that answered, and those that did not are
    named with since when and why. Pure."""
    if not unanswered:
        return f"{app} has no {what}: no servicehost lists one (add the service first)"
    silent = "; ".join(
        f"servicehost {addr} has not answered for {max(0.0, now - u.since):.0f} s ({u.why})"
        for addr, u in sorted(unanswered.items())
    )
    return f"{app} has no {what} that the servicehosts which answered list; {silent}"


def source_id(src: BackupSource) -> str:
    """The servicehost's id, as the controller records it holding an app's
    services (its identity's host); its key's name from an older servicehost.
    Key names are no ids: every host made by `roost cluster init` is
    'servicehost', and two named alike would be one in the catalog."""
    return src.holder_id or src.host_id


def old_names(seen: Iterable[BackupSource]) -> dict[str, list[str]]:
    """Key name -> the ids of the servicehosts answering by it, for names an
    older backupd named servicehosts by (records and clusters under such a
    name are theirs: catalog.renamed, clusters.inherit). Pure."""
    out: dict[str, list[str]] = {}
    for src in seen:
        if src.holder_id and src.holder_id != src.host_id:
            out.setdefault(src.host_id, []).append(src.holder_id)
    return {n: sorted(set(ids)) for n, ids in out.items()}


def pair_key(source: PgSource) -> str:
    """What backupd names a servicehost pair's PostgreSQL by (its Barman
    server's name, its base backups' source): its Patroni scope, which no
    servicehost id (an address, a host name) looks like."""
    return f"apps-{source.pair}"


@dataclass
class Where:
    """Where one app's data lives, as the servicehosts last said."""

    host: str  # servicehost id
    endpoint: Endpoint
    postgres: PgSource | None = None
    database: str = ""
    # The cluster the database is in, as `Pullers.clusters` names it: the
    # servicehost's id, or its pair's (`pair_key`).
    cluster: str = ""
    redis: RedisSource | None = None
    data: bool = False
    # An S3 bucket (BucketPull): backed up in the "data" kind's snapshot.
    bucket: bool = False
    # The servicehost holding it (None: `endpoint`): on a pair, the member
    # that provisioned it, which need not hold the database.
    bucket_at: Endpoint | None = None


@dataclass
class Pullers:
    """RPC clients to every source the address book names."""

    node: Node
    cluster: ClusterConfig
    # servicehost endpoint address -> its last BackupSource
    seen: dict[str, BackupSource] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)
    # servicehost endpoint address -> its last ask's failure (gone once it answers)
    unanswered: dict[str, Unanswered] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    repos: list[str] = field(default_factory=list)
    # The replication slots this backupd streams pairs' WAL through (the
    # daemon wires Clusters.pair_slots): each servicehost in a pair is
    # asked to declare them permanent in its pair's Patroni.
    pair_slots: Callable[[], list[str]] = list
    _clients: dict[str, RpcClient] = field(default_factory=dict)
    _refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _client(self, role: str, endpoints: list[Endpoint], key: str = "") -> RpcClient:
        name = key or role
        c = self._clients.get(name)
        if c is None:
            c = RpcClient(self.node, endpoints)
            self._clients[name] = c
        return c

    async def close(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()

    async def _ask(
        self, client: RpcClient, msg: Msg, timeout: float, what: str, tries: int = 1
    ) -> Msg:
        try:
            return await client.call(msg, timeout=timeout, tries=tries)
        except (RpcTimeout, RemoteError) as exc:
            raise SourceError(f"{what}: {exc}", refused=isinstance(exc, RemoteError)) from None

    # ------------------------------------------------------------ servicehosts

    def servicehost(self, ep: Endpoint) -> RpcClient:
        return self._client("servicehost", [ep], key=f"servicehost {ep.address}")

    def refused(self) -> list[str]:
        """The servicehosts whose last ask was refused (not those silent)."""
        return sorted(a for a, u in self.unanswered.items() if u.refused)

    def missing(self, app: str, what: str) -> str:
        """`missing`, as the servicehosts last answered."""
        return missing(app, what, self.unanswered, self.clock())

    async def refresh(self, only: Collection[str] | None = None) -> list[str]:
        """Ask every servicehost (or those at the addresses `only`) what it
        holds, and grant backupd access to it; the hosts that did not answer
        (their last answer is kept). One refresh at a time (module doc)."""
        async with self._refreshing:
            return await self._refresh(only)

    def _failed(self, address: str, exc: SourceError) -> None:
        was = self.unanswered.get(address)
        since = was.since if was is not None else self.clock()
        self.unanswered[address] = Unanswered(since, str(exc), exc.refused)

    async def _refresh(self, only: Collection[str] | None) -> list[str]:
        eps = {
            ep.address: ep
            for ep in self.cluster.of("servicehost")
            if only is None or ep.address in only
        }

        async def one(ep: Endpoint) -> str:
            slots = self.pair_slots()
            # Asked again at once when it names a pair first seen, with the
            # slot for it (a slot Patroni was not told of, it drops).
            for _ in range(2):
                try:
                    reply = await self._ask(
                        self.servicehost(ep),
                        BackupSourceRequest(pair_slots=slots),
                        ASK_TIMEOUT_S,
                        ep.address,
                    )
                except SourceError as exc:
                    log.warning("servicehost %s: %s", ep.address, exc)
                    self._failed(ep.address, exc)
                    return ep.address
                if not isinstance(reply, BackupSource):
                    self._failed(ep.address, SourceError(f"answered {type(reply).__name__}"))
                    return ep.address
                self.seen[ep.address] = reply
                self.seen_at[ep.address] = time.time()
                self.unanswered.pop(ep.address, None)
                want = self.pair_slots()
                if reply.pg_pair is None or set(want) <= set(slots):
                    break
                slots = want
            return ""

        async def in_turn(group: list[str]) -> list[str]:
            return [failed for a in group if (failed := await one(eps[a]))]

        groups = ask_groups(eps, self.seen)
        failed = [a for got in await asyncio.gather(*map(in_turn, groups)) for a in got]
        if only is None and self.cluster.of("gateway"):
            try:
                reply = await self._ask(
                    self.gateways(), RepoBundleRequest(app=""), ASK_TIMEOUT_S, "gateway", tries=2
                )
                if isinstance(reply, RepoBundle):
                    self.repos = sorted(reply.apps)
            except SourceError as exc:
                log.warning("gateways: %s", exc)
        return failed

    def where(self, app: str) -> Where | None:
        """Where the app's services and data are ("" when none holds it)."""
        found: Where | None = None
        for address, src in self.seen.items():
            ep = next((e for e in self.cluster.of("servicehost") if e.address == address), None)
            if ep is None:
                continue
            w = Where(source_id(src), ep)
            if src.postgres is not None and app in src.postgres.databases:
                w.postgres, w.database = src.postgres, src.postgres.databases[app]
                w.cluster = w.host
            elif src.pg_pair is not None and app in src.pg_pair.databases:
                w.postgres, w.database = src.pg_pair, src.pg_pair.databases[app]
                w.cluster = pair_key(src.pg_pair)
            w.redis = next((r for r in src.redis if r.app == app), None)
            w.data = app in src.data_apps
            w.bucket = app in src.bucket_apps
            w.bucket_at = ep if w.bucket else None
            if w.postgres or w.redis or w.data or w.bucket:
                if found is None:
                    found = w
                    continue
                # A second host with some of it (a pair's other member, with
                # the Redis replica): keep what each has, answered for by the
                # host that holds the database, where its restore steps go.
                base, other = (w, found) if w.postgres and not found.postgres else (found, w)
                base.postgres = base.postgres or other.postgres
                base.database = base.database or other.database
                base.cluster = base.cluster or other.cluster
                base.redis = base.redis or other.redis
                base.data = base.data or other.data
                base.bucket = base.bucket or other.bucket
                base.bucket_at = base.bucket_at or other.bucket_at
                found = base
        return found

    def clusters(self) -> dict[str, tuple[Endpoint, PgSource]]:
        """servicehost id -> its PostgreSQL cluster (for base backups and WAL);
        and each servicehost pair's (`pair_key`), as both members said it
        (the databases each recorded, together)."""
        out = {}
        for address, src in sorted(self.seen.items()):
            ep = next((e for e in self.cluster.of("servicehost") if e.address == address), None)
            if ep is None:
                continue
            if src.postgres is not None:
                out[source_id(src)] = (ep, src.postgres)
            if src.pg_pair is not None:
                key = pair_key(src.pg_pair)
                if key in out:
                    dbs = {**out[key][1].databases, **src.pg_pair.databases}
                    out[key] = (out[key][0], msgspec.structs.replace(out[key][1], databases=dbs))
                else:
                    out[key] = (ep, src.pg_pair)
        return out

    def sources(self) -> Sources:
        """What there is to back up (`roost.backups.schedule`)."""
        dbs: set[str] = set()
        redis: set[str] = set()
        data: set[str] = set()
        for src in self.seen.values():
            for pg in (src.postgres, src.pg_pair):
                if pg is not None:
                    dbs.update(pg.databases)
            redis.update(r.app for r in src.redis)
            data.update(src.data_apps)
            data.update(src.bucket_apps)  # a bucket goes with the data kind
        return Sources(
            clusters=tuple(sorted(self.clusters())),
            databases=tuple(sorted(dbs)),
            redis=tuple(sorted(redis)),
            data=tuple(sorted(data)),
            git=tuple(self.repos),
            platform=bool(self.cluster.of("controller")),
        )

    def kinds_of(self, app: str) -> list[BackupKind]:
        """What an app has to back up (a capture's "everything")."""
        w = self.where(app)
        kinds: list[BackupKind] = []
        if w is not None and w.postgres is not None:
            kinds.append("pgdump")
        if w is not None and w.redis is not None:
            kinds.append("redis")
        if w is not None and (w.data or w.bucket):
            kinds.append("data")
        if app in self.repos:
            kinds.append("git")
        return kinds

    async def pull_data(self, w: Where, app: str) -> bytes:
        # have_version -1: no version is ours, so the whole tree always comes
        # (a directory never written through a session is at version 0).
        msg = DataPull(app=app, have_version=-1)
        reply = await self._ask(self.servicehost(w.endpoint), msg, PULL_TIMEOUT_S, f"data of {app}")
        if not isinstance(reply, DataArchive) or reply.unchanged:
            raise SourceError(f"the servicehost answered {type(reply).__name__} to DataPull")
        return reply.archive

    async def pull_bucket(self, w: Where, app: str) -> bytes:
        msg = BucketPull(app=app)
        at = self.servicehost(w.bucket_at or w.endpoint)
        reply = await self._ask(at, msg, PULL_TIMEOUT_S, f"bucket of {app}")
        if not isinstance(reply, BucketArchive):
            raise SourceError(f"the servicehost answered {type(reply).__name__} to BucketPull")
        return reply.archive

    async def restore_bucket(self, w: Where, msg: BucketRestore) -> None:
        at = self.servicehost(w.bucket_at or w.endpoint)
        await self._ask(at, msg, RESTORE_STEP_TIMEOUT_S, "bucket restore")

    async def restore_step(self, w: Where, msg: ServiceRestoreStep) -> ServiceRestoreReady:
        reply = await self._ask(
            self.servicehost(w.endpoint), msg, RESTORE_STEP_TIMEOUT_S, f"restore {msg.step}"
        )
        if not isinstance(reply, ServiceRestoreReady):
            raise SourceError(f"the servicehost answered {type(reply).__name__} to {msg.step}")
        return reply

    def host(self, host_id: str) -> tuple[Endpoint, BackupSource] | None:
        """The servicehost `host_id` and its last answer (None: none gave one).
        Its key's name, as an older backupd named it, is taken too when one
        servicehost only answers by it (two alike are not told apart)."""
        found = []
        for address, src in self.seen.items():
            ep = next((e for e in self.cluster.of("servicehost") if e.address == address), None)
            if ep is not None:
                found.append((ep, src))
        by_id = [f for f in found if source_id(f[1]) == host_id]
        by_name = [f for f in found if f[1].host_id == host_id]
        if by_id:
            return by_id[0]
        return by_name[0] if len(by_name) == 1 else None

    def names(self) -> dict[str, list[str]]:
        """old_names of the servicehosts' last answers."""
        return old_names(self.seen.values())

    async def restore_host(self, ep: Endpoint, msg: ServiceHostRestore) -> ServiceHostRestored:
        reply = await self._ask(self.servicehost(ep), msg, RESTORE_STEP_TIMEOUT_S, "host restore")
        if not isinstance(reply, ServiceHostRestored):
            raise SourceError(f"the servicehost answered {type(reply).__name__} to a host restore")
        return reply

    async def restore_redis(self, w: Where, msg: RedisRestore) -> None:
        await self._ask(self.servicehost(w.endpoint), msg, RESTORE_STEP_TIMEOUT_S, "Redis restore")

    async def restore_data(self, w: Where, msg: DataRestore) -> None:
        await self._ask(self.servicehost(w.endpoint), msg, RESTORE_STEP_TIMEOUT_S, "data restore")

    # ------------------------------------------------------------ gateways, controllers

    def gateways(self) -> RpcClient:
        eps = self.cluster.of("gateway")
        if not eps:
            raise SourceError("the address book names no gateway")
        return self._client("gateway", eps)

    def controllers(self) -> RpcClient:
        eps = self.cluster.of("controller")
        if not eps:
            raise SourceError("the address book names no controller")
        return self._client("controller", eps)

    async def bundle(self, app: str) -> bytes:
        reply = await self._ask(
            self.gateways(), RepoBundleRequest(app=app), PULL_TIMEOUT_S, f"git of {app}", tries=2
        )
        if not isinstance(reply, RepoBundle):
            raise SourceError(f"the gateway answered {type(reply).__name__} to RepoBundleRequest")
        return reply.bundle

    async def restore_repo(self, app: str, bundle: bytes) -> None:
        await self._ask(
            self.gateways(), RepoRestore(app=app, bundle=bundle), PULL_TIMEOUT_S, "git restore"
        )

    async def platform(self) -> PlatformSnapshot:
        """The platform's files, with what the controller says a restore needs
        among them as restore.json (roost.backups.platformindex)."""
        reply = await self._ask(
            self.controllers(), PlatformSnapshotRequest(), PULL_TIMEOUT_S, "platform", tries=2
        )
        if not isinstance(reply, PlatformSnapshot):
            raise SourceError(f"the controller answered {type(reply).__name__} to a snapshot")
        index = index_file(reply)
        if index is None:
            log.warning(
                "the controller did not say which apps and images its state holds (older "
                "than this backupd): the platform backup carries no image"
            )
            return reply
        return msgspec.structs.replace(reply, files={**reply.files, INDEX_FILE: index})

    async def tell(self, msg: HostRestoreApp) -> Msg:
        """One app's part of a host restore starts or ended, to a controller
        (it suspends or resumes the app). Asked once: a start asked again
        would find the app suspended by the first and not say it did.
        SourceError when no controller answers."""
        return await self._ask(self.controllers(), msg, ASK_TIMEOUT_S, "host restore")

    async def report(self, event: BackupEvent) -> None:
        """A failure (or a recovery) as a platform event; logged when no
        controller takes it (the catalog and the metrics still say so)."""
        try:
            await self._ask(self.controllers(), event, ASK_TIMEOUT_S, "event", tries=2)
        except SourceError as exc:
            log.warning("could not report %s %s to a controller: %s", event.kind, event.app, exc)
