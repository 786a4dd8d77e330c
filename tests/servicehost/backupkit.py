"""What the backup tests do to a real servicehost as backupd would: provision,
ask for the sources, and pull or load with the real tools (psql, pg_dump,
pg_restore, redis-cli)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg

from roost.servicehost.binaries import find_binaries
from roost.wire.messages import (
    BackupSource,
    BackupSourceRequest,
    ServiceCredentials,
    ServiceProvision,
)
from tests.servicehost.harness import Servicehost


async def provision(sh: Servicehost, app: str, kind: str, memory_mb: int = 0) -> ServiceCredentials:
    reply = await sh.call(ServiceProvision(app=app, kind=kind, memory_mb=memory_mb))  # type: ignore[arg-type]
    assert isinstance(reply, ServiceCredentials), reply
    return reply


def superuser(sh: Servicehost, dbname: str = "postgres") -> psycopg.Connection:
    pg = json.loads((sh.data / "servicehost" / "state.json").read_text())["postgres"]
    return psycopg.connect(
        host="127.0.0.1", port=pg["port"], user=pg["superuser"], password=pg["password"],
        dbname=dbname, connect_timeout=5, autocommit=True,
    )  # fmt: skip


async def sources(sh: Servicehost) -> BackupSource:
    reply = await sh.as_backupd(BackupSourceRequest())
    assert isinstance(reply, BackupSource), reply
    return reply


def as_app(c: ServiceCredentials, dbname: str | None = None) -> psycopg.Connection:
    return psycopg.connect(
        host=c.host, port=c.port, user=c.username, password=c.password,
        dbname=dbname or c.database, connect_timeout=5, autocommit=True,
    )  # fmt: skip


def as_backup(src: BackupSource, dbname: str) -> psycopg.Connection:
    assert src.postgres is not None
    pg = src.postgres
    return psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=dbname,
        connect_timeout=5, autocommit=True,
    )  # fmt: skip


def pg_tool(
    src: BackupSource, tool: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """A PostgreSQL client tool as the backup role (libpq environment)."""
    assert src.postgres is not None
    pg = src.postgres
    env = {
        **os.environ, "PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": pg.user,
        "PGPASSWORD": pg.password, "PGCONNECT_TIMEOUT": "5",
    }  # fmt: skip
    r = subprocess.run([find_binaries().pg(tool), *args], env=env, capture_output=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r


def dump(src: BackupSource, database: str, dest: Path) -> Path:
    """pg_dump -Fc of `database`, as backupd's nightly dump takes it."""
    pg_tool(src, "pg_dump", "--format=custom", "--file", str(dest), "--dbname", database)
    return dest


def load(src: BackupSource, dumpfile: Path, database: str) -> None:
    """Load a dump into a prepared database, as backupd does."""
    pg_tool(
        src, "pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
        "--dbname", database, str(dumpfile),
    )  # fmt: skip


def redis_cli(
    host: str, port: int, user: str, password: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["redis-cli", "-h", host, "-p", str(port), "--user", user, "--pass", password,
         "--no-auth-warning", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
