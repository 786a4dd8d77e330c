"""An app's tables with row-level security are backed up whole and proven.

An app may enable row-level security on its tables (a tenant's rows hidden
from another's sessions), even FORCE it on itself as their owner. pg_dump
(row_security off) and the facts must still see every row, as the backup
role the servicehost really makes: a real servicehost (`roost servicehost`,
its PostgreSQL and its backup role), backupd's real jobs and drill in this
process, a real restic repository.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from psycopg import sql

from roost.backups.daemon import Backupd
from roost.backups.layout import Layout
from roost.backups.sources import Pullers
from roost.wire.cluster import ClusterConfig
from roost.wire.messages import BackupRestore, BackupRestored
from roost.wire.node import Node
from tests.backups.backupdkit import backupd_at, servicehost_and_base
from tests.servicehost.backupkit import as_app, provision
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e

TENANTS = """
CREATE TABLE notes (id serial PRIMARY KEY, tenant int NOT NULL, body text);
INSERT INTO notes (tenant, body) VALUES (1, 'one'), (1, 'two'), (2, 'three');
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY by_tenant ON notes USING (tenant = current_setting('app.tenant', true)::int);
CREATE TABLE hidden (x int);
INSERT INTO hidden VALUES (1), (2);
ALTER TABLE hidden ENABLE ROW LEVEL SECURITY;
ALTER TABLE hidden FORCE ROW LEVEL SECURITY;
"""


@pytest.fixture
async def backupd() -> AsyncIterator[tuple[Servicehost, Backupd]]:
    async with servicehost_and_base("roost-rls-") as (sh, base):
        assert sh.backupd_keys is not None
        async with Node(sh.backupd_keys, []) as node:
            pullers = Pullers(node, ClusterConfig(endpoints={"servicehost": [sh.endpoint]}))
            try:
                yield sh, await backupd_at(Layout(base), pullers)
            finally:
                await pullers.close()


async def test_a_database_with_row_level_security_is_backed_up_whole_and_proven(
    backupd: tuple[Servicehost, Backupd],
) -> None:
    sh, bk = backupd
    pg = await provision(sh, "shop", "postgres")
    with as_app(pg) as conn:
        conn.execute(TENANTS)
        # A policy for the app's own role, as a tenant-scoped app writes it.
        conn.execute(
            sql.SQL("CREATE POLICY own ON notes TO {} USING (tenant = 1)").format(
                sql.Identifier(pg.username)
            )
        )
        conn.execute("SET app.tenant = '3'")  # none of tenant 3's: its own role's only
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (2,)
    (entry,) = await bk.jobs.capture("shop", "capture", ["pgdump"])
    assert entry.state == "taken", entry.message
    rec = await bk.jobs.followup(entry.id)
    assert rec.entry.state == "verified", rec.entry.message
    tables = rec.facts["tables"]
    assert (tables["public.notes"]["rows"], tables["public.hidden"]["rows"]) == (3, 2)

    # And it comes back in place, its row-level security with it.
    with as_app(pg) as conn:
        conn.execute("ALTER TABLE notes NO FORCE ROW LEVEL SECURITY")
        conn.execute("DELETE FROM notes")
    reply = await bk.handlers()(BackupRestore(app="shop", backup_id=entry.id))
    assert isinstance(reply, BackupRestored), reply
    with as_app(pg) as conn:
        security = "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s"
        for table in ("notes", "hidden"):
            assert conn.execute(security, (table,)).fetchone() == (True, True)
        policies = conn.execute("SELECT policyname FROM pg_policies ORDER BY 1").fetchall()
        assert policies == [("by_tenant",), ("own",)]
        conn.execute("SET app.tenant = '2'")  # its own role's rows, and tenant 2's
        assert conn.execute("SELECT body FROM notes ORDER BY id").fetchall() == [
            ("one",), ("two",), ("three",),
        ]  # fmt: skip
        conn.execute("SET app.tenant = '3'")
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM hidden").fetchone() == (0,)  # no policy: none
