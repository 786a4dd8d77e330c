"""The servicehost side of bench/backup.py: a PostgreSQL 15 cluster with an
app's database, the app's load on it, and the servicehost's two restore steps.

The cluster runs with a servicehost's durability (fsync and synchronous
commit on: the defaults), as the postgres user, pinned to its own CPU when
the bench pins (`Source.start(cpu=...)`), in a process group of its own so
that `kill()` takes it down at once like a host losing power. backupd
reaches it over loopback TCP as the backup role of tests/backups/pgsource.py
(scram-sha-256, REPLICATION, pg_read_all_data, the backup functions); the
bench itself uses the superuser over the cluster's unix socket.

The app's database is pgbench's tables (about half of `size`: the write
load updates them) plus a table of hex text (the rest), and `rpo_marks`,
where the recovery point writer commits timestamped rows.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.backups.pgsource import BACKUP_PASSWORD, BACKUP_ROLE, GRANTS  # noqa: E402
from tests.conftest import free_port  # noqa: E402

from roost.backups.pgfacts import pg_tool, run_tool  # noqa: E402
from roost.backups.sources import Pullers, Where  # noqa: E402
from roost.proc import spawn as proc  # noqa: E402
from roost.proc.stop import signal_group, terminate  # noqa: E402
from roost.wire.messages import PgSource, ServiceRestoreReady, ServiceRestoreStep  # noqa: E402

APP = "benchapp"  # the app, its database and its role
SUPERUSER = "roost"
LOOPBACK = "127.0.0.1"
PGBENCH_MB_PER_SCALE = 15.0  # pgbench_accounts and its index, per scale unit
DOC_ROW_BYTES = 230  # a documents row with its share of the primary key
HBA = f"""\
local all all trust
host all {BACKUP_ROLE} 127.0.0.1/32 scram-sha-256
host replication {BACKUP_ROLE} 127.0.0.1/32 scram-sha-256
"""
_PROGRESS = re.compile(r"^progress: ([\d.]+) s, ([\d.]+) tps", re.MULTILINE)


def pinned(cpu: int | None) -> proc.ChildSetup | None:
    """A child's set-up that pins it (and so all it forks) to `cpu`."""
    if cpu is None:
        return None
    return proc.child_setup(enter=lambda: os.sched_setaffinity(0, {cpu}))


@dataclass
class Source:
    base: Path  # the servicehost's directory (the postgres user's)
    cpu: int | None = None
    # postgresql.conf settings beyond the servicehost's (which are the defaults)
    settings: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    server: asyncio.subprocess.Process | None = None

    @property
    def pgdata(self) -> Path:
        return self.base / "pgdata"

    @property
    def sock(self) -> Path:
        return self.base / "sock"

    def pg(self) -> PgSource:
        """What the servicehost's BackupSource tells backupd."""
        return PgSource(host=LOOPBACK, port=self.port, user=BACKUP_ROLE,
                        password=BACKUP_PASSWORD, databases={APP: APP})  # fmt: skip

    def env(self, db: str = APP) -> dict[str, str]:
        """libpq's environment for the superuser over the unix socket."""
        return {"PGHOST": str(self.sock), "PGPORT": str(self.port), "PGUSER": SUPERUSER,
                "PGDATABASE": db}  # fmt: skip

    def kwargs(self, db: str = APP) -> dict[str, Any]:
        return {"host": str(self.sock), "port": self.port, "user": SUPERUSER, "dbname": db,
                "autocommit": True}  # fmt: skip

    async def sql(self, query: str | sql.Composable, db: str = APP) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(**self.kwargs(db)) as c:
            cur = await c.execute(query)  # type: ignore[arg-type]
            return await cur.fetchall() if cur.description else []

    async def _as_postgres(self, argv: list[str]) -> None:
        pw = pwd.getpwnam("postgres")
        setup = proc.child_setup(uid=pw.pw_uid, gid=pw.pw_gid)
        status, out = await run_tool(argv, timeout=300, setup=setup, cwd=self.base)
        if status != 0:
            raise RuntimeError(f"{argv[0]} failed: {out[-2000:]}")

    async def start(self) -> None:
        pw = pwd.getpwnam("postgres")
        for d in (self.base, self.sock):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        if not self.pgdata.exists():
            await self._as_postgres([pg_tool("initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                                     "-E", "UTF8", "--no-locale", "--auth=trust"])  # fmt: skip
            (self.pgdata / "pg_hba.conf").write_text(HBA)
        argv = [pg_tool("postgres"), "-D", str(self.pgdata), "-p", str(self.port),
                "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={self.sock}",
                "-c", "logging_collector=off"]  # fmt: skip
        for k, v in self.settings.items():
            argv += ["-c", f"{k}={v}"]
        log = os.open(self.base / "postgres.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            cpu = self.cpu
            pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
            setup = proc.child_setup(enter=pin, uid=pw.pw_uid, gid=pw.pw_gid)
            self.server = await proc.start(argv, stdout=log, stderr=log, setup=setup)
        finally:
            os.close(log)
        deadline = time.monotonic() + 60
        while True:
            try:
                await self.sql("SELECT 1", "postgres")
                return
            except psycopg.OperationalError:
                if self.server.returncode is not None or time.monotonic() > deadline:
                    tail = (self.base / "postgres.log").read_text()[-2000:]
                    raise RuntimeError(f"the source PostgreSQL did not start:\n{tail}") from None
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.server is not None:
            await terminate(self.server, 30.0, signal.SIGINT)  # a fast shutdown
            self.server = None

    async def kill(self) -> None:
        """The host dies: every process of the cluster SIGKILLed at once."""
        if self.server is not None:
            signal_group(self.server.pid, signal.SIGKILL)
            await self.server.wait()
            self.server = None

    async def destroy(self) -> None:
        await self.kill()
        await asyncio.to_thread(shutil.rmtree, self.pgdata, True)

    # ------------------------------------------------------------ the app

    async def provision(self, size: int) -> int:
        """The backup role, the app's role and database, its data (~`size`
        bytes); the database's size."""
        await self.sql(
            sql.SQL("CREATE ROLE {} LOGIN REPLICATION BYPASSRLS PASSWORD {}").format(
                sql.Identifier(BACKUP_ROLE), sql.Literal(BACKUP_PASSWORD)
            ),
            "postgres",
        )
        await self.sql(GRANTS, "postgres")
        await self.sql(f"CREATE ROLE {APP} LOGIN", "postgres")
        await self.sql(f"CREATE DATABASE {APP} OWNER {APP}", "postgres")
        scale = max(1, round(size / 2 / (PGBENCH_MB_PER_SCALE * 2**20)))
        argv = [pg_tool("pgbench"), "-i", "-q", "-s", str(scale), APP]
        status, out = await run_tool(argv, env=self.env(), timeout=3600, setup=pinned(self.cpu))
        if status != 0:
            raise RuntimeError(f"pgbench -i failed: {out[-2000:]}")
        await self.sql(
            "CREATE TABLE documents (id bigint PRIMARY KEY, author int NOT NULL,"
            " created timestamptz NOT NULL, body text NOT NULL)"
        )
        have = int((await self.sql(f"SELECT pg_database_size('{APP}')"))[0][0])
        rows = max(1000, (size - have) // DOC_ROW_BYTES)
        await self.sql(
            "INSERT INTO documents SELECT g, g % 9973, now() - g * interval '1 second',"
            " md5(g::text) || md5((g * 7)::text) || md5(random()::text) || md5(random()::text)"
            f" FROM generate_series(1, {rows}) g"
        )
        await self.sql("CREATE TABLE rpo_marks (id bigserial PRIMARY KEY, ts timestamptz NOT NULL,"
                       " pad text NOT NULL)")  # fmt: skip
        await self.sql("VACUUM ANALYZE")
        await self.sql("CHECKPOINT")
        return int((await self.sql(f"SELECT pg_database_size('{APP}')"))[0][0])

    async def pgbench(self, out: Path, *, rate: int = 0) -> asyncio.subprocess.Process:
        """The app's write load: pgbench's simple updates from 2 clients,
        unthrottled (or at `rate` tps), per-second progress with epoch
        timestamps into `out`; runs until terminated."""
        argv = [pg_tool("pgbench"), "-n", "-N", "-c", "2", "-j", "1", "-T", "86400",
                "-P", "1", "--progress-timestamp"]  # fmt: skip
        if rate:
            argv += ["-R", str(rate)]
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            return await proc.start([*argv, APP], env={**self.env(), "PATH": "/usr/bin:/bin"},
                                    stdout=fd, stderr=fd, setup=pinned(self.cpu))  # fmt: skip
        finally:
            os.close(fd)


def progress(text: str) -> list[tuple[float, float]]:
    """(epoch second, tps over the second before it) from pgbench -P output."""
    return [(float(t), float(tps)) for t, tps in _PROGRESS.findall(text)]


def mean_tps(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """The mean tps of the whole seconds between `start` and `end`."""
    inside = [tps for t, tps in samples if start + 1.0 <= t <= end]
    return statistics.fmean(inside) if inside else float("nan")


class Writer(threading.Thread):
    """Commits a row stamped with the source's clock every `every` seconds
    until the connection fails; `last` is the newest stamp acknowledged."""

    def __init__(self, source: Source, every: float = 0.02) -> None:
        super().__init__(name="rpo-writer", daemon=True)
        self.kwargs, self.every = source.kwargs(), every
        self.last: datetime | None = None
        self.count = 0
        self.error = ""
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(**self.kwargs) as conn:
                while not self.stop.is_set():
                    row = conn.execute(
                        "INSERT INTO rpo_marks (ts, pad) VALUES (clock_timestamp(),"
                        " repeat('x', 200)) RETURNING ts"
                    ).fetchone()
                    self.last, self.count = row[0] if row else self.last, self.count + 1
                    time.sleep(self.every)
        except psycopg.Error as exc:
            self.error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


@dataclass
class SourcePullers(Pullers):
    """backupd's pullers, with the servicehost's answers to a restore's steps
    given here, on the same server, with the servicehost's SQL
    (roost.servicehost.pgrestore: prepare a database the backup role may
    load; swap renames it to the target). Only `--to` restores are run."""

    source: Source | None = None

    async def restore_step(self, w: Where, msg: ServiceRestoreStep) -> ServiceRestoreReady:
        assert self.source is not None and msg.target
        src, prepared = self.source, f"restore_{msg.restore_id}"
        db, backup = sql.Identifier(prepared), sql.Identifier(BACKUP_ROLE)
        if msg.step == "prepare":
            await src.sql(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                db, sql.Identifier(APP)), "postgres")  # fmt: skip
            await src.sql(sql.SQL("GRANT CONNECT, CREATE, TEMP ON DATABASE {} TO {}").format(
                db, backup), "postgres")  # fmt: skip
            await src.sql(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(backup),
                          prepared)  # fmt: skip
            return ServiceRestoreReady(database=prepared)
        if msg.step == "discard":
            await src.sql(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db), "postgres")
            return ServiceRestoreReady(database=prepared)
        await src.sql(sql.SQL("REASSIGN OWNED BY {} TO {}").format(backup, sql.Identifier(APP)),
                      prepared)  # fmt: skip
        await src.sql(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            db, sql.Identifier(msg.target)), "postgres")  # fmt: skip
        return ServiceRestoreReady(database=msg.target)


async def plain_dump(source: Source, dest: Path) -> float:
    """`pg_dump -Fc -f FILE` of the app's database: its seconds."""
    started = time.monotonic()
    status, out = await run_tool([pg_tool("pg_dump"), "-Fc", "-f", str(dest), APP],
                                 env=source.env(), timeout=6 * 3600)  # fmt: skip
    if status != 0:
        raise RuntimeError(f"pg_dump failed: {out[-2000:]}")
    return time.monotonic() - started


async def plain_restore(source: Source, dump: Path, database: str) -> float:
    """`pg_restore` of the plain dump into a new database (the flags
    backupd's restore uses): its seconds, the CREATE DATABASE included."""
    started = time.monotonic()
    await source.sql(f"CREATE DATABASE {database} OWNER {APP} TEMPLATE template0", "postgres")
    argv = [pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
            "-d", database, str(dump)]  # fmt: skip
    status, out = await run_tool(argv, env=source.env(database), timeout=6 * 3600)
    if status != 0:
        raise RuntimeError(f"pg_restore failed: {out[-2000:]}")
    return time.monotonic() - started
