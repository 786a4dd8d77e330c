"""A PostgreSQL 15 source for backupd's tests: `tests.pgserver`'s throwaway
server plus the backup role a servicehost grants backupd.

The role is what Barman and pgfacts need and no more: LOGIN, REPLICATION,
BYPASSRLS (pg_dump must see every row), pg_read_all_data, pg_read_all_settings,
pg_read_all_stats, and EXECUTE on the backup functions (pg_backup_start/stop,
pg_switch_wal, pg_create_restore_point). Not a superuser. The server's
pg_hba.conf (trust, from initdb) gets scram-sha-256 lines for the role in
front, so its password is really checked, over TCP as in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from roost.backups.barman import ServerConfig
from roost.backups.layout import Layout
from roost.wire.messages import BackupEvent, PgSource
from tests.pgserver import postgres_server

BACKUP_ROLE = "roost_backup"
BACKUP_PASSWORD = "s3cret:with%odd\\chars"
BASE = "base"  # the Barman server name of the package's `based` fixture

GRANTS = f"""
GRANT pg_read_all_data, pg_read_all_settings, pg_read_all_stats TO {BACKUP_ROLE};
GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO {BACKUP_ROLE};
GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO {BACKUP_ROLE};
GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {BACKUP_ROLE};
GRANT EXECUTE ON FUNCTION pg_create_restore_point(text) TO {BACKUP_ROLE};
"""


@dataclass(frozen=True)
class Source:
    pg: PgSource
    host: str
    port: int

    def admin(self, dbname: str = "roost") -> psycopg.Connection:
        """An autocommit superuser connection (trust, the test's own)."""
        return psycopg.connect(
            host=self.host, port=self.port, user="roost", dbname=dbname, autocommit=True
        )

    def sql(self, query: str, dbname: str = "roost") -> list[tuple]:
        with self.admin(dbname) as c:
            cur = c.execute(query)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


@contextlib.contextmanager
def pg_source(parent: Path | None = None) -> Iterator[Source]:
    with postgres_server(parent=parent) as url:
        hostport = url.split("@", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        src = Source(
            PgSource(host=host, port=int(port), user=BACKUP_ROLE, password=BACKUP_PASSWORD),
            host,
            int(port),
        )
        with src.admin() as c:
            c.execute(
                sql.SQL("CREATE ROLE {} LOGIN REPLICATION BYPASSRLS PASSWORD {}").format(
                    sql.Identifier(BACKUP_ROLE), sql.Literal(BACKUP_PASSWORD)
                )
            )
        # Functions belong to a database: the grants go where Barman connects.
        with src.admin("postgres") as c:
            c.execute(GRANTS)  # type: ignore[arg-type]
        with src.admin() as c:
            row = c.execute("SHOW hba_file").fetchone()
            assert row is not None
            hba = Path(row[0])
            lines = (
                f"host all {BACKUP_ROLE} 127.0.0.1/32 scram-sha-256\n"
                f"host replication {BACKUP_ROLE} 127.0.0.1/32 scram-sha-256\n"
            )
            hba.write_text(lines + hba.read_text())
            c.execute("SELECT pg_reload_conf()")
        yield src


@dataclass(frozen=True)
class Based:
    layout: Layout
    config: ServerConfig
    before_backup: datetime  # the source's clock just before the base backup began
    backup_id: str


@dataclass
class OneHost:
    """The one servicehost a backupd's jobs see in these tests (their
    `host` interface): its PostgreSQL as `sh1`, the events it is told."""

    source: PgSource
    events: list[BackupEvent] = field(default_factory=list)

    def clusters(self) -> dict[str, tuple[Any, PgSource]]:
        return {"sh1": (None, self.source)}

    def names(self) -> dict[str, list[str]]:
        return {}  # its key's name is its id

    async def report(self, event: BackupEvent) -> None:
        self.events.append(event)
