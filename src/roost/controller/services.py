"""The controller's side of databases as services: asking a servicehost to
provision or remove them, keeping the credentials (encrypted), and turning
them into the environment of the app's instances.

Each binding records its holder, the servicehost with the data (serviceplace.py
chooses it for a new app); every request about the service goes to that one
only (servicehosts.py). Its holder down is an error naming it, never a
request to another servicehost, which would find nothing and say so: a
removal unbinds only on the holder's own ServiceRemoved. With servicehost
pairs (a cluster's, migration 0021) an app's services live on a pair, on
both of its servicehosts, and each request goes to the one whose Patroni is
the primary at that moment (asked, never remembered: a failover may have
moved it since).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from roost import patroni
from roost.appspec.model import AppSpec
from roost.appspec.service_env import service_environment
from roost.controller import pairproxy, redispair
from roost.controller.astore import AsyncStore
from roost.controller.retired import Retirements
from roost.controller.secretbox import SecretBox
from roost.controller.servicehosts import HostDown, ServiceHosts, ask_patroni
from roost.controller.serviceplace import NoPlace, find_holder, pair_primary, place, place_pair
from roost.controller.store import AppRow
from roost.controller.store_pairs import PairRow
from roost.wire.messages import (
    BucketCredentials,
    BucketDeprovision,
    BucketProvision,
    BucketRemoved,
    Ping,
    ProxyTarget,
    RedisCopy,
    ServerStatus,
    ServiceCredentials,
    ServiceDeprovision,
    ServiceHostStatus,
    ServiceHostStatusRequest,
    ServiceKind,
    ServiceProvision,
    ServiceRemoved,
)
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.controller")

KINDS = ("postgres", "redis", "s3")
PING_TIMEOUT_S = 5.0


class ServiceError(Exception):
    """`status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


def _kind(kind: str) -> ServiceKind:
    if kind == "postgres":
        return "postgres"
    if kind == "redis":
        return "redis"
    raise ServiceError(f"unsupported service {kind!r} (Roost provides: {', '.join(KINDS)})", 422)


class ServiceBroker:
    """`client` reaches every servicehost (what all of them do: archive an
    app's data directory); `hosts` each one on its own, by host id (made over
    `client` when that names a single servicehost)."""

    def __init__(
        self,
        store: AsyncStore,
        box: SecretBox,
        client: RpcClient | None,
        hosts: ServiceHosts | None = None,
    ) -> None:
        self.store = store
        self.box = box
        self.client = client
        if hosts is None and client is not None:
            hosts = ServiceHosts.over(client)
        self.hosts = hosts
        # app id -> its opened credentials; an app missing has not been read.
        self._cache: dict[int, list[ServiceCredentials]] = {}
        # app id -> kind -> the servicehost holding it ("": not recorded yet)
        self._holders: dict[int, dict[str, str]] = {}
        # app id -> the pair its services are on (None: none), read with them
        self._pair: dict[int, PairRow | None] = {}
        self._changes = 0  # bumped by every binding change this replica makes
        self.status: dict[str, ServiceHostStatus] = {}
        # Servicehosts replaced for good: never surveyed nor listed (retired.py).
        self.retirements = Retirements()

    async def warm(self, app_ids: Iterable[int]) -> None:
        """Read the credentials of the apps not cached yet: one query whatever
        their number (all bindings when several are missing)."""
        wanted = set(app_ids)
        while missing := {i for i in wanted if i not in self._cache}:
            changes = self._changes
            one = next(iter(missing)) if len(missing) == 1 else None
            rows = await self.store.service_bindings(one)
            # The pairs they are on (pairs never change once recorded; an
            # app's pair only once, at its first service, a binding change).
            placed = await self.store.app_pair_map(sorted(missing))
            pairs = {p.name: p for p in await self.store.service_pairs()} if placed else {}
            if changes != self._changes:
                continue  # a binding changed meanwhile: what was read may be stale
            found: dict[int, list[ServiceCredentials]] = {i: [] for i in missing}
            held: dict[int, dict[str, str]] = {i: {} for i in missing}
            for row in rows:
                if row.app_id in found:
                    found[row.app_id].append(ServiceCredentials(**self.box.open(row.secret)))
                    held[row.app_id][row.kind] = row.host
            self._cache.update(found)
            self._holders.update(held)
            self._pair.update({i: pairs.get(placed.get(i, "")) for i in missing})

    def _forget(self, app_id: int) -> None:
        self._changes += 1
        self._cache.pop(app_id, None)
        self._holders.pop(app_id, None)
        self._pair.pop(app_id, None)

    def forget(self, app_ids: Iterable[int]) -> None:
        """Read these apps' credentials again when next asked (another
        controller may have bound or removed a service since)."""
        for app_id in app_ids:
            self._forget(app_id)

    async def reread(self, app_id: int) -> None:
        """Read the app's bindings from the store now. A user's request
        (services list, info, add, remove; a deploy's ensure; an app's
        deletion) may follow one another controller answered: the cache is
        dropped when an app's desired state changes, and a binding alone
        (an app with no release yet) changes none, so a binding made
        through one controller was "no such service" to the other."""
        self.forget([app_id])
        await self.warm([app_id])

    def cached_credentials(self, app_id: int) -> list[ServiceCredentials]:
        """The app's credentials, read by `warm` before (KeyError if not)."""
        return self._cache[app_id]

    def app_credentials(self, app_id: int) -> list[ServiceCredentials]:
        """What the app's processes connect with (read by `warm` before):
        through the runner's data proxy when the app is on a pair."""
        return pairproxy.proxied(self._cache[app_id], self._pair.get(app_id))[0]

    def proxy_targets(self, app_id: int) -> list[ProxyTarget]:
        """The data proxy listeners for the app's processes (`warm` first)."""
        return pairproxy.proxied(self._cache[app_id], self._pair.get(app_id))[1]

    async def credentials(self, app_id: int) -> list[ServiceCredentials]:
        await self.warm([app_id])
        return self._cache[app_id]

    async def environment(self, app_id: int) -> dict[str, str]:
        return service_environment(await self.credentials(app_id))

    async def kinds(self, app_id: int) -> list[str]:
        return [c.kind for c in await self.credentials(app_id)]

    def _need_hosts(self, what: str) -> ServiceHosts:
        if self.hosts is None:
            raise ServiceError(
                f"cannot {what}: no servicehost is configured (install postgresql and redis-server)"
            )
        return self.hosts

    async def holders(self, app_id: int) -> dict[str, str]:
        """kind -> the servicehost holding it, as recorded ("": not yet)."""
        await self.warm([app_id])
        return dict(self._holders[app_id])

    async def holder(self, app: AppRow, kind: str) -> str:
        """The servicehost holding the app's `kind`; a binding recorded
        without one gets it now, from what the servicehosts report."""
        host = (await self.holders(app.id)).get(kind)
        if host is None:
            raise ServiceError(f"{app.name} has no {kind} service", 404)
        # A pair's PostgreSQL: wherever Patroni has its primary now.
        pair = await self._pair_of(app) if kind == "postgres" else None
        if pair is not None:
            return await self._pair_primary(pair)
        if host and (self.hosts is None or self.hosts.knows(host)):
            return host
        hosts = self._need_hosts(f"find {app.name}'s {kind}")
        reports = await self._survey(hosts)
        # Recorded under an id that every servicehost answering now does not
        # have (the platform restored onto another machine): the one that
        # reports it holds it. While one is silent, it may be that one.
        if host and (host in reports or len(reports) < len(hosts.endpoints)):
            return host
        try:
            host = find_holder(reports, len(hosts.endpoints), app.name, kind)
        except NoPlace as exc:
            raise ServiceError(f"cannot tell which servicehost holds it: {exc}") from None
        await self.store.set_service_host(app.id, kind, host)
        self._forget(app.id)
        log.info("%s's %s: held by servicehost %s (recorded now)", app.name, kind, host)
        return host

    async def _survey(self, hosts: ServiceHosts) -> dict[str, ServiceHostStatus]:
        await self.retirements.refresh(self.store, hosts, self.status)
        reports = await hosts.survey()
        self.status.update(reports)
        return reports

    async def _client_of(self, host: str, check: bool = False) -> RpcClient:
        """The holder's client; with `check`, only once it answered a Ping
        (a request with a long timeout would otherwise wait it out)."""
        down = f"servicehost {host} does not answer: it holds the data, and no other one has it"
        try:
            client = await self._need_hosts("reach a servicehost").client_of(host)
            if check:
                await client.call(Ping(), timeout=PING_TIMEOUT_S, tries=2)
        except (HostDown, RpcTimeout, RemoteError):
            raise ServiceError(down) from None
        return client

    async def _pair_of(self, app: AppRow) -> PairRow | None:
        """The pair holding the app's services (None: no pairs, or not placed yet)."""
        name = await self.store.app_pair(app.id)
        if not name:
            return None
        return next((p for p in await self.store.service_pairs() if p.name == name), None)

    async def _pair_primary(self, pair: PairRow) -> str:
        """The servicehost id of the pair's primary now, as Patroni says."""
        answers = await ask_patroni(pair.addresses, pair.rest_port, "/primary")
        address = pair_primary({a: status for a, (status, _) in answers.items()})
        if address is None or not pair.host_at(address):
            raise ServiceError(
                f"servicehost pair {pair.name} has no primary now (a failover takes up to "
                "15 s); try again shortly"
            )
        return pair.host_at(address)

    async def _place_on_pair(self, app: AppRow, pairs: list[PairRow], hosts: ServiceHosts) -> str:
        """The pair's primary for a new service of the app: its pair's, or a
        new placement on the pair with most room (serviceplace.place_pair)."""
        name = await self.store.app_pair(app.id)
        if not name:
            reports = await self._survey(hosts)
            members = {p.name: p.hosts for p in pairs}
            try:
                chosen = place_pair(members, reports, await self.store.pair_loads())
            except NoPlace as exc:
                raise ServiceError(f"cannot place {app.name}'s service: {exc}") from None
            name = await self.store.set_app_pair(app.id, chosen)
            log.info("%s placed on servicehost pair %s", app.name, name)
        pair = next(p for p in pairs if p.name == name)
        return await self._pair_primary(pair)

    async def pg_replication(self, app: AppRow) -> dict[str, object]:
        """The app's PostgreSQL pair as Patroni's /cluster shows it: primary,
        standby, how far behind ({} for a database on one servicehost)."""
        pair = await self._pair_of(app)
        if pair is None:
            return {}
        answers = await ask_patroni(pair.addresses, pair.rest_port, "/cluster")
        bodies = [body for status, body in answers.values() if status == 200 and body]
        if not bodies:
            return {"pg_pair": pair.name, "pg_problem": "no member's Patroni answers"}
        v = patroni.view(bodies[0])
        standby = v.synchronous or (v.standbys[0] if v.standbys else None)

        def named(address: str) -> str:
            return f"{pair.host_at(address) or '?'} ({address})"

        shown: dict[str, object] = {
            "pg_pair": pair.name,
            "pg_primary": named(v.primary.name) if v.primary else "",
            "pg_standby": named(standby.name) if standby else "",
            "pg_lag_bytes": standby.lag_bytes if standby and standby.lag_bytes is not None else -1,
        }
        problem = pg_problem(v)
        if problem:
            shown["pg_problem"] = problem
        return shown

    async def _place(self, app: AppRow) -> str:
        """Where a new service of the app goes (serviceplace.place)."""
        hosts = self._need_hosts("place a service")
        pairs = await self.store.service_pairs()
        if pairs:
            return await self._place_on_pair(app, pairs, hosts)
        held = await self.holders(app.id)
        # Its other services' holder (found now if not recorded): the new one joins it.
        joined = await self.holder(app, next(iter(held))) if held else ""
        reports = await self._survey(hosts)
        bound: dict[str, set[int]] = {}
        for row in await self.store.service_bindings(None):
            bound.setdefault(row.host, set()).add(row.app_id)
        try:
            return place(reports, {h: len(ids) for h, ids in bound.items() if h}, joined)
        except NoPlace as exc:
            raise ServiceError(f"cannot place {app.name}'s service: {exc}") from None

    async def report(self, app: AppRow, kind: str) -> ServerStatus | None:
        """What the holder reports of the service: its last push, or asked
        now when that does not list it yet (just after provisioning)."""
        host = (await self.holders(app.id)).get(kind, "")
        # Holder unknown (not found yet): whichever servicehost pushed it.
        pushed = [self.status.get(host)] if host else list(self.status.values())
        found = next(filter(None, (_server(r, app.name, kind) for r in pushed)), None)
        if found is None and host and self.hosts is not None:
            with contextlib.suppress(ServiceError, RpcTimeout, RemoteError):
                reply = await (await self._client_of(host)).call(
                    ServiceHostStatusRequest(), timeout=5, tries=1
                )
                if isinstance(reply, ServiceHostStatus):
                    found = _server(reply, app.name, kind)
        return found

    async def add(self, app: AppRow, kind: str, memory_mb: int = 0) -> ServiceCredentials:
        if kind not in KINDS:
            raise ServiceError(
                f"unsupported service {kind!r} (Roost provides: {', '.join(KINDS)})", 422
            )
        self._need_hosts(f"provision {kind}")
        host = await self._place(app)
        client = await self._client_of(host)
        if kind == "s3":
            return await self._add_bucket(app, host, client)
        try:
            reply = await client.call(
                ServiceProvision(app=app.name, kind=_kind(kind), memory_mb=memory_mb), timeout=40
            )
        except (RpcTimeout, RemoteError) as exc:
            raise ServiceError(
                f"could not provision {kind} for {app.name} on servicehost {host}: {exc}"
            ) from None
        if not isinstance(reply, ServiceCredentials):
            raise ServiceError(
                f"servicehost answered {type(reply).__name__} to a provisioning request"
            )
        # A Redis pair's copy goes to the partner and is never stored (redispair.py).
        copy, reply = reply.copy, redispair.without_copy(reply)
        if copy is not None:
            await self._redis_copy(app, host, copy)
        sealed = self.box.seal(redispair.stored(reply))
        await self.store.bind_service(app.id, kind, sealed, host)
        self._forget(app.id)
        log.info("%s's %s provisioned on servicehost %s", app.name, kind, host)
        return reply

    async def _add_bucket(self, app: AppRow, host: str, client: RpcClient) -> ServiceCredentials:
        """An S3 bucket (servicehost/s3.py), kept as the other services'
        credentials are: the bucket as `database`, the key as `username`,
        its secret as `password`, the endpoint as `url`."""
        try:
            reply = await client.call(BucketProvision(app=app.name), timeout=60)
        except (RpcTimeout, RemoteError) as exc:
            raise ServiceError(
                f"could not provision s3 for {app.name} on servicehost {host}: {exc}"
            ) from None
        if not isinstance(reply, BucketCredentials):
            raise ServiceError(f"servicehost answered {type(reply).__name__} to a bucket request")
        fields = bucket_fields(reply)
        await self.store.bind_service(app.id, "s3", self.box.seal(fields), host)
        self._forget(app.id)
        log.info("%s's s3 bucket %s provisioned on servicehost %s", app.name, reply.bucket, host)
        return ServiceCredentials(**fields)

    async def _redis_copy(self, app: AppRow, holder: str, copy: RedisCopy) -> None:
        """The replica of the app's Redis on the holder's partner (redispair.py);
        none made is no failure: the master serves, the watch reports it alone."""
        partner = await self._redis_partner(app, holder, "copy redis")
        if not partner:
            log.warning("%s's Redis has no replica: no partner of %s answers", app.name, holder)
            return
        try:
            await redispair.provision_copy(await self._client_of(partner), app.name, copy)
        except (ServiceError, RpcTimeout, RemoteError, TypeError) as exc:
            log.warning("%s's Redis has no replica on %s yet: %s", app.name, partner, exc)
            return
        log.info("%s's Redis: master on %s, replica on %s", app.name, holder, partner)

    async def _redis_partner(self, app: AppRow, holder: str, what: str) -> str:
        """The other servicehost of the app's pair (redispair.partner)."""
        hosts = self._need_hosts(what)
        pair = await self._pair_of(app)
        answering = list(await self._survey(hosts))
        return redispair.partner(
            holder, answering, len(hosts.endpoints), pair.hosts if pair else ()
        )

    async def _remove_redis_copy(self, app: AppRow, holder: str) -> None:
        """The partner's copy of a removed Redis goes too (best effort)."""
        partner = await self._redis_partner(app, holder, "remove redis")
        if not partner:
            return
        try:
            client = await self._client_of(partner)
            await client.call(ServiceDeprovision(app=app.name, kind="redis"), timeout=600, tries=1)
        except (ServiceError, RpcTimeout, RemoteError) as exc:
            log.warning("%s's Redis copy on %s was not removed: %s", app.name, partner, exc)

    async def ensure(self, app: AppRow, spec: AppSpec) -> list[str]:
        """Provision what the spec asks for and the app lacks; the kinds added."""
        await self.reread(app.id)
        have = set(await self.kinds(app.id))
        added = []
        for kind in spec.services:
            if kind in have:
                continue
            memory = spec.redis_memory_mb or 0 if kind == "redis" else 0
            await self.add(app, kind, memory)
            added.append(kind)
        return added

    async def remove(self, app: AppRow, kind: str) -> str:
        """Final backup, then drop: returns where the backup is."""
        if kind not in await self.kinds(app.id):
            raise ServiceError(f"{app.name} has no {kind} service", 404)
        self._need_hosts(f"remove {kind}")
        host = await self.holder(app, kind)
        client = await self._client_of(host, check=True)
        if kind == "s3":
            return await self._remove_bucket(app, host, client)
        try:
            reply = await client.call(
                ServiceDeprovision(app=app.name, kind=_kind(kind)), timeout=600, tries=1
            )
        except (RpcTimeout, RemoteError) as exc:
            raise ServiceError(
                f"could not take the final backup of {kind} on servicehost {host}; "
                f"nothing was removed: {exc}"
            ) from None
        if not isinstance(reply, ServiceRemoved) or (reply.app, reply.kind) != (app.name, kind):
            raise ServiceError(
                f"servicehost {host} answered {type(reply).__name__} to a removal request"
            )
        if kind == "redis":
            await self._remove_redis_copy(app, host)
        await self.store.unbind_service(app.id, kind)
        self._forget(app.id)
        return reply.backup_path

    async def _remove_bucket(self, app: AppRow, host: str, client: RpcClient) -> str:
        """The bucket's final backup (every object), its key revoked, the
        bucket deleted; where the backup is."""
        try:
            reply = await client.call(BucketDeprovision(app=app.name), timeout=600, tries=1)
        except (RpcTimeout, RemoteError) as exc:
            raise ServiceError(
                f"could not take the final backup of s3 on servicehost {host}; "
                f"nothing was removed: {exc}"
            ) from None
        if not isinstance(reply, BucketRemoved) or reply.app != app.name:
            raise ServiceError(
                f"servicehost {host} answered {type(reply).__name__} to a removal request"
            )
        await self.store.unbind_service(app.id, "s3")
        self._forget(app.id)
        return reply.backup_path

    async def remove_all(self, app: AppRow) -> dict[str, str]:
        return {kind: await self.remove(app, kind) for kind in await self.kinds(app.id)}


# A synchronous standby this far behind is a problem worth showing (bytes of WAL).
LAG_WARN_BYTES = 16 << 20


def pg_problem(v: patroni.ClusterView) -> str:
    """What is wrong with a pair, as Patroni sees it ("" when nothing)."""
    if v.primary is None:
        return "no primary (a failover may be under way)"
    if not v.standbys:
        return "no standby: a second loss would lose the database"
    if any(m.state == patroni.CREATING_REPLICA for m in v.standbys):
        # (pgrejoin reinitializes a standby whose WAL is gone: its data is
        # removed and copied anew; a new member is made the same way)
        return "the standby is being copied anew from the primary: one copy until it streams"
    if v.synchronous is None:
        return "the standby is not synchronous: a failover now could lose writes"
    lag = v.synchronous.lag_bytes
    if lag is None:
        return "the standby's lag is unknown (not streaming)"
    if lag > LAG_WARN_BYTES:
        return f"the standby is {lag} bytes behind"
    return ""


def bucket_fields(c: BucketCredentials) -> dict[str, Any]:
    """A bucket's credentials in ServiceCredentials' fields (as sealed and
    opened: ServiceCredentials(**fields)); "s3" is not a wire ServiceKind."""
    return {
        "app": c.app, "kind": "s3", "host": c.host, "port": c.port, "database": c.bucket,
        "username": c.access_key, "password": c.secret_key, "url": c.url,
    }  # fmt: skip


def _server(report: ServiceHostStatus | None, app: str, kind: str) -> ServerStatus | None:
    if report is not None:
        for s in report.servers:
            if s.app == app and s.kind == kind:
                return s
    return None
