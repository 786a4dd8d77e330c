"""An app's services provisioned, backed up and removed: the requests.

Requests for one (app, kind) are serialised by the host's lock for it
(`ServiceHost.lock`), and each step is idempotent, so a request repeated
after a timeout (the RPC client retries with the same request) or after a
crash half-way simply finishes the job:

  provision:   record the credentials first (state.json), then create the
               role/database or start the Redis server. Asking again returns
               the same credentials. New services are refused when the disk
               is below the free-space threshold, before anything is created.
  deprovision: final backup first; only when it is on disk is the data
               dropped, and only then is the service forgotten. A repeated
               request answers with the backup already taken.

The servers these run on, and state.json, are the ServiceHost's
(roost.servicehost.host).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

import psycopg

from roost.datadir.shared import root_for
from roost.servicehost import backuprole, pgadmin
from roost.servicehost.backups import archive_app_data
from roost.servicehost.host import ServiceError, ServiceHost, free_port
from roost.servicehost.names import (
    BadAppName,
    check_app,
    new_password,
    pg_name,
    postgres_url,
    redis_url,
)
from roost.servicehost.s3 import ServiceProblem
from roost.servicehost.state import HostState, Service
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import (
    Msg,
    RedisCopy,
    ServiceBackup,
    ServiceBackupDone,
    ServiceCredentials,
    ServiceDeprovision,
    ServiceKind,
    ServiceProvision,
    ServiceRemoved,
)

log = logging.getLogger("roost.servicehost")


class Provisioning:
    """The service requests on `host`'s servers: `entries()` for its table."""

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        # Answers to removals already done, for a request that is repeated.
        self._removed: dict[str, ServiceRemoved] = {}

    def entries(self) -> list[Entry]:
        async def provision(msg: ServiceProvision) -> Msg:
            return await self.provision(msg.app, msg.kind, msg.memory_mb, msg.copy_of)

        async def deprovision(msg: ServiceDeprovision) -> Msg:
            return await self.deprovision(msg.app, msg.kind)

        async def backup(msg: ServiceBackup) -> Msg:
            return await self.backup(msg.app, msg.kind)

        errors = (ServiceError, BadAppName, ServiceProblem)
        return [
            on(ServiceProvision, refusing(provision, *errors)),
            on(ServiceDeprovision, refusing(deprovision, *errors)),
            on(ServiceBackup, refusing(backup, *errors)),
        ]

    def credentials(self, svc: Service) -> ServiceCredentials:
        """What the app is told to connect with."""
        host = self.host
        if svc.kind == "postgres":
            assert host.state.postgres is not None
            # (On a pair: this member's port; apps connect through the data proxy.)
            port = host.pg_pair.pg_port if host.pg_pair is not None else host.state.postgres.port
            url = postgres_url(host.host, port, svc.database, svc.username, svc.password)
            return ServiceCredentials(
                app=svc.app, kind="postgres", host=host.host, port=port,
                database=svc.database, username=svc.username, password=svc.password, url=url,
            )  # fmt: skip
        return ServiceCredentials(
            app=svc.app, kind="redis", host=host.host, port=svc.port, database="0",
            password=svc.password, url=redis_url(host.host, svc.port, svc.password),
            copy=host.pairs.copy(svc) if host.pairs is not None else None,
        )  # fmt: skip

    async def provision(
        self, app: str, kind: ServiceKind, memory_mb: int = 0, copy_of: RedisCopy | None = None
    ) -> Msg:
        check_app(app)
        key = HostState.key(app, kind)
        async with self.host.lock(app, kind):
            self._removed.pop(key, None)
            if kind == "postgres":
                svc = await self._provision_postgres(app)
            else:
                svc = await self._provision_redis(app, memory_mb, copy_of)
            return self.credentials(svc)

    async def _provision_postgres(self, app: str) -> Service:
        host = self.host
        name = pg_name(app)
        for other in host.state.of_kind("postgres"):
            if other.database == name and other.app != app:
                raise ServiceError(
                    f"app {app!r} would share database {name} with app {other.app!r}"
                )
        svc = host.state.get(app, "postgres")
        if svc is None:
            host.check_disk()
        pg = await host.apps_pg()
        if svc is None:
            port = self.credentials_port()
            svc = Service(
                app=app, kind="postgres", port=port, database=name, username=name,
                password=new_password(),
            )  # fmt: skip
            host.state.services[HostState.key(app, "postgres")] = svc
            host.save()
        try:
            await pgadmin.ensure_database(
                pg, name, svc.password, host.settings.postgres_connection_limit
            )
        except (psycopg.OperationalError, OSError) as exc:
            # A pair without a primary for now (a failover): retried by the caller.
            raise ServiceError(f"the app's PostgreSQL is not reachable: {exc}", True) from None
        if host.pg_pair is None and host.state.postgres and host.state.postgres.backup_password:
            await backuprole.allow_database(await host.pg_up(), name)  # backupd dumps it too
        log.info("postgres for %s: database %s ready", app, name)
        return svc

    def credentials_port(self) -> int:
        """The PostgreSQL port an app's database is on here."""
        host = self.host
        if host.pg_pair is not None:
            return host.pg_pair.pg_port
        assert host.state.postgres is not None
        return host.state.postgres.port

    async def _provision_redis(
        self, app: str, memory_mb: int, copy_of: RedisCopy | None = None
    ) -> Service:
        host = self.host
        if memory_mb < 0:
            raise ServiceError("memory_mb must be 0 (the default) or more")
        svc = host.state.get(app, "redis")
        taken = {s.port for s in host.state.services.values()}
        if host.state.postgres is not None:
            taken.add(host.state.postgres.port)
        new_copy = svc is None and copy_of is not None
        if new_copy:
            assert copy_of is not None
            svc = self._redis_copy(app, copy_of, taken)
        if svc is None:
            host.check_disk()
            svc = Service(
                app=app, kind="redis", port=free_port(taken=taken), password=new_password(),
                memory_mb=memory_mb or host.settings.redis_memory_mb,
                admin_password=new_password(), backup_password=new_password(),
                replica_password=new_password() if host.pairs is not None else "",
            )  # fmt: skip
            host.state.services[HostState.key(app, "redis")] = svc
            host.save()
            log.info("redis for %s: port %d, %d MB", app, svc.port, svc.memory_mb)
        elif memory_mb and memory_mb != svc.memory_mb:
            svc.memory_mb = memory_mb
            host.save()
            if app in host.redis:
                server, sup = host.redis[app]
                server.prepare()  # the next start reads the new limit
                if sup.is_up:
                    await server.set_memory(memory_mb)
            log.info("redis for %s: memory limit now %d MB", app, memory_mb)
        if app not in host.redis:
            host.start_redis(svc)
        await host.redis_up(app)
        if host.pairs is not None and not svc.replica_of:
            await host.pairs.register([svc])  # a new master: the sentinels watch it
        if host.pairs is not None and new_copy:
            # A new replica (perhaps in a lost servicehost's place): the
            # sentinels forget whatever replica they knew and find this one.
            await host.pairs.reset(app)
        return svc

    def _redis_copy(self, app: str, copy: RedisCopy, taken: set[int]) -> Service:
        """Record the pair's second copy of an app's Redis (redispairs.py)."""
        host = self.host
        if host.pairs is None:
            raise ServiceError("this servicehost is not in a pair: it keeps no Redis copies")
        if copy.port in taken:
            raise ServiceError(f"port {copy.port} of {app}'s Redis is taken on this servicehost")
        host.check_disk()
        svc = host.pairs.from_copy(app, copy)
        host.state.services[HostState.key(app, "redis")] = svc
        host.save()
        log.info("redis for %s: port %d, replica of %s", app, svc.port, copy.master_host)
        return svc

    async def _backup_app_data(self, app: str) -> None:
        """The app's data directory is backed up with its databases."""
        host = self.host
        source = root_for(host.layout.data_dir, host.settings.appdata_root) / app
        dest = await asyncio.to_thread(
            archive_app_data, source, host.layout.backups(app), time.time()
        )
        if dest is not None:
            log.info("backup of %s data directory: %s", app, dest)

    async def backup(self, app: str, kind: ServiceKind) -> Msg:
        host = self.host
        check_app(app)
        async with host.lock(app, kind):
            svc = host.state.get(app, kind)
            if svc is None and host.pg_pair is None:
                raise ServiceError(f"app {app!r} has no {kind} service here")
            pg = await host.apps_pg() if kind == "postgres" else None
            # On a pair the app's database is in the pair's primary, made
            # through the partner perhaps: this host may not record it.
            name = svc.database if svc is not None else pg_name(app)
            if (
                svc is None
                and pg is not None
                and host.pg_pair is not None
                and await pgadmin.database_exists(pg, name)
            ):
                svc = Service(app=app, kind="postgres", port=self.credentials_port(),
                              database=name, username=name, password="")  # fmt: skip
            if svc is None:
                raise ServiceError(f"app {app!r} has no {kind} service here")
            dest = host.backup_path(app, kind)
            if pg is not None:
                size = await pgadmin.dump(pg, svc.database, dest)
            else:
                server = await host.redis_up(app)
                await server.save()
                size = await server.copy_rdb(dest)
            log.info("backup of %s %s: %s (%d bytes)", app, kind, dest, size)
            await self._backup_app_data(app)
            return ServiceBackupDone(path=str(dest), size=size)

    async def deprovision(self, app: str, kind: ServiceKind) -> Msg:
        host = self.host
        check_app(app)
        key = HostState.key(app, kind)
        async with host.lock(app, kind):
            svc = host.state.get(app, kind)
            if kind == "postgres":
                if svc is None and host.pg_pair is None and not host.pg_started:
                    # (state.json records a database before it is made: none, and no
                    # server to ask.)
                    return self._removed.get(key) or ServiceRemoved(app=app, kind=kind)
                pg = await host.apps_pg()
                name = svc.database if svc else pg_name(app)
                if svc is None and not await pgadmin.database_exists(pg, name):
                    return self._removed.get(key) or ServiceRemoved(app=app, kind=kind)
                dest = host.backup_path(app, kind)
                await pgadmin.dump(pg, name, dest)
                await pgadmin.drop_database(pg, name)
            else:
                if svc is None:
                    return self._removed.get(key) or ServiceRemoved(app=app, kind=kind)
                if host.pairs is not None:
                    # Forgotten first, or the sentinels would promote the replica.
                    await host.pairs.unregister(app)
                if app not in host.redis:
                    host.start_redis(svc)
                server = await host.redis_up(app)
                await server.save()
                _, sup = host.redis.pop(app)
                # SIGTERM makes Redis save dump.rdb once more: nothing written
                # between SAVE and the stop is lost from the final backup.
                await sup.stop()
                dest = host.backup_path(app, kind)
                await server.copy_rdb(dest)
                await asyncio.to_thread(shutil.rmtree, server.dir, True)
            host.state.services.pop(key, None)
            host.save()
            await self._backup_app_data(app)
            log.info("removed %s of %s; final backup %s", kind, app, dest)
            result = ServiceRemoved(app=app, kind=kind, backup_path=str(dest))
            self._removed[key] = result
            return result
