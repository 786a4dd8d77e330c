"""BackupSourceRequest: what backupd may pull from this servicehost, and how.

backupd asks before it pulls (authz admits only backupd keys). The answer
names the PostgreSQL cluster with the backup role's credentials (the role is
made, or brought up to date, first: backuprole.py) and every app's
database, each app's Redis with its SYNC-only user, the apps that have a
data directory (pulled with DataPull), and state.json itself, from which a
fresh servicehost serves the same credentials. pg_hba admits the backup
role from the address book's backupd hosts (postgres.py), every one of
them: each backupd pulls on its own, with the one role and password, and
streams WAL through a replication slot of its own (PostgreSQL's defaults,
10 WAL senders and 10 slots, leave room for two backupds' streams and base
backups besides a standby's). The request rewrites pg_hba, and has it
reloaded, should it differ.
"""

from __future__ import annotations

import asyncio
import logging

from roost.servicehost import backuprole
from roost.servicehost.appdata import AppData
from roost.servicehost.host import ServiceError, ServiceHost
from roost.servicehost.names import BACKUP_ROLE, REDIS_BACKUP_USER, BadName, new_password
from roost.servicehost.postgres import Postgres
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import BackupSource, BackupSourceRequest, Msg, PgSource, RedisSource

log = logging.getLogger("roost.servicehost")


async def ready_backup_role(host: ServiceHost, pg: Postgres) -> str:
    """Make (or bring up to date) the backup role; its password, made once."""
    cluster = host.state.postgres
    assert cluster is not None, "the cluster is recorded before PostgreSQL starts"
    if not cluster.backup_password:
        cluster.backup_password = new_password()
        host.save()
        log.info("made the backup role %s's password", BACKUP_ROLE)
    dbs = sorted(s.database for s in host.state.of_kind("postgres"))
    await backuprole.ensure_backup_role(pg, cluster.backup_password, dbs)
    return cluster.backup_password


class BackupSources:
    def __init__(self, host: ServiceHost, appdata: AppData) -> None:
        self.host = host
        self.appdata = appdata
        # Two backupds ask at once (each pulls on its own): the role is made
        # and granted by one request at a time, or both CREATE it, or their
        # GRANTs collide ("tuple concurrently updated"), and one is refused.
        self._role_lock = asyncio.Lock()

    def entries(self) -> list[Entry]:
        return [on(BackupSourceRequest, refusing(self.source, ServiceError, BadName))]

    async def source(self, _msg: BackupSourceRequest) -> Msg:
        host = self.host
        postgres = None
        cluster = host.state.postgres
        if cluster is not None:
            pg = await host.pg_up()
            async with self._role_lock:
                password = await ready_backup_role(host, pg)
                await pg.refresh_hba()
            postgres = PgSource(
                host=host.host, port=cluster.port, user=BACKUP_ROLE, password=password,
                databases={s.app: s.database for s in host.state.of_kind("postgres")},
            )  # fmt: skip
        redis = [
            RedisSource(
                app=svc.app,
                # In a pair, the copy that is master now: the newest data.
                host=host.pairs.master_host(svc) if host.pairs is not None else host.host,
                port=svc.port,
                user=REDIS_BACKUP_USER,
                password=svc.backup_password,
            )
            for svc in sorted(host.state.of_kind("redis"), key=lambda s: s.app)
            if svc.backup_password
        ]
        return BackupSource(
            host_id=host.name,
            holder_id=host.host_id,
            postgres=postgres,
            redis=redis,
            data_apps=self.appdata.apps(),
            state_json=host.layout.state_file.read_bytes()
            if host.layout.state_file.exists()
            else b"",
        )
