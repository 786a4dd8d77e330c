"""The backup role made and granted by several callers at once, on one real
PostgreSQL: both servicehosts of a pair do it on the pair's one primary
whenever backupd asks them what they hold (and two backupds ask at once).
Side by side they collided ("duplicate key value violates unique
constraint pg_authid_rolname_index", "tuple concurrently updated"), the
servicehost refused backupd, and backupd kept a view without the app's new
database: `roost backups capture` answered "ledger has no database"
(tests/cluster/test_pg_pair_platform.py, one run in three)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from roost.servicehost.backuprole import ensure_backup_role
from roost.servicehost.binaries import Binaries
from roost.servicehost.names import BACKUP_ROLE
from tests.pgserver import postgres_server

pytestmark = pytest.mark.e2e

CALLERS = 4
ROUNDS = 8


@dataclass(frozen=True)
class Cluster:
    superuser: str = "roost"


class Superuser:
    """What backuprole needs of a PostgreSQL: a superuser connection."""

    def __init__(self, url: str) -> None:
        hostport = url.split("@", 1)[1].split("/", 1)[0]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.cluster = Cluster()
        self.bins = Binaries(Path("/nonexistent"), Path("/nonexistent"))  # not used

    async def connect(self, dbname: str = "postgres", timeout: int = 5) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            host=self.host, port=self.port, user="roost", dbname=dbname,
            connect_timeout=timeout, autocommit=True,
        )  # fmt: skip

    async def tool_env(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def server() -> Iterator[Superuser]:
    with postgres_server() as url:
        pg = Superuser(url)
        with psycopg.connect(host=pg.host, port=pg.port, user="roost", dbname="postgres",
                             autocommit=True) as c:  # fmt: skip
            for n in range(3):
                c.execute(f"CREATE DATABASE app{n}")
        yield pg


async def test_callers_at_once_all_succeed_and_make_one_role(server: Superuser) -> None:
    dbs = [f"app{n}" for n in range(3)]
    for _ in range(ROUNDS):
        async with await server.connect() as conn:
            cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BACKUP_ROLE,))
            if await cur.fetchone():
                # Its grants are in `postgres` (functions) and shared (databases).
                await conn.execute(f"DROP OWNED BY {BACKUP_ROLE}")
                await conn.execute(f"DROP ROLE {BACKUP_ROLE}")
        # Each round: the role missing (every caller CREATEs it) and then
        # present (every caller ALTERs and GRANTs at once).
        for _ in range(2):
            got = await asyncio.gather(
                *(ensure_backup_role(server, "pw", dbs) for _ in range(CALLERS)),
                return_exceptions=True,
            )
            assert [g for g in got if g is not None] == []
    async with await server.connect("app2") as conn:
        cur = await conn.execute(
            "SELECT rolreplication, rolbypassrls, has_database_privilege(%s, 'app2', 'CONNECT')"
            " FROM pg_roles WHERE rolname = %s",
            (BACKUP_ROLE, BACKUP_ROLE),
        )
        assert await cur.fetchall() == [(True, True, True)]
