"""BackupSourceRequest: what backupd may pull from this servicehost, and how.

backupd asks before it pulls (authz admits only backupd keys). The answer
names the PostgreSQL cluster with the backup role's credentials (the role is
made, or brought up to date, first: backuprole.py) and every app's
database, each app's Redis with its SYNC-only user, the apps that have a
data directory (pulled with DataPull), those with an S3 bucket (pulled
with BucketPull, bucketbackup.py), and state.json itself, from which a
fresh servicehost serves the same credentials. pg_hba admits the backup
role from the address book's backupd hosts (postgres.py), every one of
them: each backupd pulls on its own, with the one role and password, and
streams WAL through a replication slot of its own (PostgreSQL's defaults,
10 WAL senders and 10 slots, leave room for two backupds' streams and base
backups besides a standby's). The request rewrites pg_hba, and has it
reloaded, should it differ. A PostgreSQL not started yet (pgdemand.py) is
not named: backupd then keeps no Barman server for it.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from roost import patroni
from roost.servicehost import backuprole, pairbackup, pgadmin
from roost.servicehost.appdata import AppData
from roost.servicehost.bucketbackup import BucketBackups
from roost.servicehost.host import ServiceError, ServiceHost
from roost.servicehost.names import BACKUP_ROLE, REDIS_BACKUP_USER, BadName, new_password
from roost.servicehost.pairdb import PairAdmin
from roost.servicehost.pgpair import PairPlan
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
    # On a pair every app's database is in the pair's PostgreSQL, none here.
    dbs = [] if host.pg_pair is not None else sorted(own_databases(host).values())
    await backuprole.ensure_backup_role(pg, cluster.backup_password, dbs)
    return cluster.backup_password


def own_databases(host: ServiceHost) -> dict[str, str]:
    """app -> its database, of the databases this servicehost records."""
    return {s.app: s.database for s in host.state.of_kind("postgres")}


async def pair_source(host: ServiceHost, plan: PairPlan, slots: list[str]) -> PgSource:
    """The pair's PostgreSQL as backupd reaches it (pairbackup.py): the
    backup role made on its primary, the slots declared permanent."""
    slots = pairbackup.check_slots(slots)
    password = pairbackup.backup_password(plan)
    pg = PairAdmin(plan, host.bins)
    try:
        # Those this host recorded (the partner answers backupd with the
        # apps placed through it) that the pair holds.
        there = await pgadmin.database_sizes(pg)
        dbs = {a: d for a, d in own_databases(host).items() if d in there}
        await backuprole.ensure_backup_role(pg, password, sorted(dbs.values()))
        await pairbackup.declare(plan, slots, host.settings.pg_slot_wal_keep_mb)
    except (psycopg.Error, OSError) as exc:
        raise ServiceError(f"pair {plan.name}'s PostgreSQL: {exc}", retryable=True) from None
    return PgSource(
        host=",".join(patroni.bare(h) for h in plan.hosts),
        port=plan.pg_port,
        user=BACKUP_ROLE,
        password=password,
        databases=dbs,
        pair=plan.name,
        rest_port=plan.rest_port,
    )


class BackupSources:
    def __init__(self, host: ServiceHost, appdata: AppData) -> None:
        self.host = host
        self.appdata = appdata
        # Two backupds ask at once (each pulls on its own): the role is made
        # and granted by one request at a time, or both CREATE it, or their
        # GRANTs collide ("tuple concurrently updated"), and one is refused.
        self._role_lock = asyncio.Lock()

    def entries(self) -> list[Entry]:
        errors = (ServiceError, BadName, pairbackup.PairSlotsRefused)
        return [
            on(BackupSourceRequest, refusing(self.source, *errors)),
            *BucketBackups(self.host).entries(),
        ]

    async def source(self, msg: BackupSourceRequest) -> Msg:
        host = self.host
        postgres = pg_pair = None
        cluster = host.state.postgres
        # Not started yet (no database: pgdemand.py): nothing to stream or
        # base-back-up, and asking must not start it.
        if cluster is not None and host.pg_started:
            pg = await host.pg_up()
            async with self._role_lock:
                password = await ready_backup_role(host, pg)
                await pg.refresh_hba()
            postgres = PgSource(
                host=host.host, port=cluster.port, user=BACKUP_ROLE, password=password,
                databases={} if host.pg_pair is not None else own_databases(host),
            )  # fmt: skip
        if host.pg_pair is not None:
            async with self._role_lock:
                pg_pair = await pair_source(host, host.pg_pair, msg.pair_slots)
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
            pg_pair=pg_pair,
            redis=redis,
            data_apps=self.appdata.apps(),
            bucket_apps=sorted(s.app for s in host.state.of_kind("s3")),
            state_json=host.layout.state_file.read_bytes()
            if host.layout.state_file.exists()
            else b"",
        )
