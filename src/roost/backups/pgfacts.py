"""Facts about one PostgreSQL database, taken in the same instant as its dump.

Theory of operation. `dump_with_facts` opens a REPEATABLE READ, READ ONLY
transaction on the app's database, exports its snapshot
(`pg_export_snapshot()`) and hands it to `pg_dump -Fc --snapshot=...`: the
dump and the facts then see exactly the same committed rows, whatever the
app writes meanwhile. The exporting transaction stays open until pg_dump has
finished (an exported snapshot lives only as long as it).

Facts are per table: the row count and a checksum of the rows' text. The
checksum does not sort the rows (a sort of a 1 GB table spills to disk and
costs more than the dump): it is the md5 of two exact sums of a 64-bit hash
of each row's text (PostgreSQL's hashtextextended, with two seeds: the
hash that hash partitioning relies on, so stable across versions). A sum
does not care about order, so it is the same after a restore whatever the
physical order, and it is one sequential scan that PostgreSQL may share
among parallel workers. Turning rows into text is most of the cost (as for
pg_dump's COPY); hashtextextended is about half the price of md5 per row.
Row text depends on a few session settings (time zone, date and interval
styles, float digits, bytea format): both sides of a comparison set them to
the same values (`STABLE_SETTINGS`).

What counts as a table is what pg_dump dumps rows of: ordinary and unlogged
tables and leaf partitions (relkind 'r'; a partitioned parent holds no rows
of its own), outside the system schemas and not members of an extension.
Each table's own rows only (`ONLY`): an inheritance child is a table too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from roost import patroni
from roost.proc import run as proc_run
from roost.proc.spawn import ChildSetup
from roost.wire.messages import PgSource

# The PostgreSQL major version backupd serves (the servicehost's); Barman's
# path_prefix points at the same directory.
PG_BIN = Path("/usr/lib/postgresql/15/bin")
CONNECT_TIMEOUT_S = 10
APP_NAME = "roost-backupd"
DUMP_TIMEOUT_S = 6 * 3600.0
# How many differences compare() spells out per kind before "and N more".
SHOWN = 5
# The tools get a fixed, small environment: nothing of the daemon's leaks.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

STABLE_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    # Never a silently filtered count: a table whose row-level security would
    # hide rows from the backup role is an error, as it is for pg_dump.
    "row_security": "off",
}

TABLES_SQL = """
SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_)'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
ORDER BY 1, 2
"""

# {table}: a quoted, schema-qualified name.
TABLE_FACTS_SQL = """
SELECT count(*),
       md5(coalesce(sum(hashtextextended(t, 0)), 0)::text || ':' ||
           coalesce(sum(hashtextextended(t, 1)), 0)::text)
FROM (SELECT ROW(r.*)::text AS t FROM ONLY {table} AS r) AS rows
"""


class FactsError(RuntimeError):
    """The dump or the facts could not be taken (the message says why)."""


class TableFacts(msgspec.Struct, frozen=True):
    rows: int
    checksum: str


class DbFacts(msgspec.Struct, frozen=True, kw_only=True):
    database: str
    # "schema.table" (each part quoted only where SQL needs it) -> its facts
    tables: dict[str, TableFacts] = {}
    # When the snapshot was taken, by the database's clock (epoch seconds).
    taken_at: float = 0.0

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @staticmethod
    def from_json(data: bytes | str) -> DbFacts:
        return msgspec.json.decode(data, type=DbFacts)


# ------------------------------------------------------------------ comparing (pure)


def _listed(what: str, names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{what}: {shown}{more}"


def compare(expected: DbFacts, got: DbFacts) -> list[str]:
    """What differs between the facts taken at backup time and a restored copy's,
    in words; an empty list when every table holds the same rows."""
    problems: list[str] = []
    missing = sorted(set(expected.tables) - set(got.tables))
    extra = sorted(set(got.tables) - set(expected.tables))
    if missing:
        problems.append(_listed(f"{len(missing)} tables missing", missing))
    if extra:
        problems.append(_listed(f"{len(extra)} tables not in the backup", extra))
    for name in sorted(set(expected.tables) & set(got.tables)):
        want, have = expected.tables[name], got.tables[name]
        if want.rows != have.rows:
            problems.append(f"{name}: {have.rows} rows, {want.rows} when taken")
        elif want.checksum != have.checksum:
            problems.append(f"{name}: the rows' contents differ (same {want.rows} rows)")
    return problems


# ------------------------------------------------------------------ taking facts


async def _stable_session(conn: psycopg.AsyncConnection) -> None:
    for name, value in STABLE_SETTINGS.items():
        await conn.execute("SELECT set_config(%s, %s, false)", (name, value))


async def _facts_in_transaction(conn: psycopg.AsyncConnection, database: str) -> DbFacts:
    """The facts as the connection's current transaction (snapshot) sees them."""
    cur = await conn.execute("SELECT extract(epoch FROM now())::float8")
    row = await cur.fetchone()
    taken_at = float(row[0]) if row else 0.0
    cur = await conn.execute(TABLES_SQL)
    names = [(str(s), str(t), str(key)) for s, t, key in await cur.fetchall()]
    if names:
        # What pg_dump takes too: nobody can drop or rewrite a table under us.
        idents = sql.SQL(", ").join(sql.Identifier(s, t) for s, t, _ in names)
        await conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(idents))
    tables: dict[str, TableFacts] = {}
    for schema, table, key in names:
        query = sql.SQL(TABLE_FACTS_SQL).format(table=sql.Identifier(schema, table))
        cur = await conn.execute(query)
        count, checksum = (await cur.fetchone()) or (0, "")
        tables[key] = TableFacts(int(count), str(checksum))
    return DbFacts(database=database, tables=tables, taken_at=taken_at)


@dataclass(frozen=True)
class PgConn:
    """How to reach a PostgreSQL server: the source (over TCP, with the backup
    role's password) or a scratch one (its private socket directory, trust)."""

    host: str  # an address, a name, or a unix socket directory
    port: int
    user: str
    password: str = ""
    # A pair's members in `host`: connect to the one that takes writes.
    read_write: bool = False
    # A pair's Patroni REST port (0: not said), asked which member is the
    # primary before connecting (`ordered`).
    rest_port: int = 0

    @staticmethod
    def of(source: PgSource) -> PgConn:
        return PgConn(source.host, source.port, source.user, source.password,
                      bool(source.pair), source.rest_port)  # fmt: skip

    def kwargs(self, dbname: str, connect_timeout: int = CONNECT_TIMEOUT_S) -> dict[str, Any]:
        """psycopg's connection arguments."""
        out: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname,
            "connect_timeout": connect_timeout,
            "application_name": APP_NAME,
        }
        if self.password:
            out["password"] = self.password
        if self.read_write:
            out["target_session_attrs"] = "read-write"
        return out

    def env(self, dbname: str) -> dict[str, str]:
        """libpq's environment for a tool (pg_dump, pg_restore, pg_amcheck)."""
        out = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": dbname,
            "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S),
            "PGAPPNAME": APP_NAME,
        }
        if self.password:
            out["PGPASSWORD"] = self.password
        if self.read_write:
            out["PGTARGETSESSIONATTRS"] = "read-write"
        return out


async def ordered(target: PgConn) -> PgConn:
    """`target` with a pair's members listed the primary first and silent
    ones last (`roost.patroni.order_members`: each member probed at once, a
    second at most); anything else as it is. libpq tries the hosts in order
    and waits the whole connect_timeout on one whose host is down without a
    reset (a power cut, a partition) before the next: asked at each
    connection, an operation's several connections each go to the primary."""
    hosts = target.host.split(",")
    if not target.read_write or len(hosts) < 2:
        return target
    first = await patroni.order_members(hosts, target.port, target.rest_port)
    return dataclasses.replace(target, host=",".join(first))


async def ordered_source(source: PgSource) -> PgSource:
    """`source` with its members as `ordered` lists them, for a tool given
    a conninfo built from it (pg_receivewal, at each start)."""
    reach = await ordered(PgConn.of(source))
    return source if reach.host == source.host else msgspec.structs.replace(source, host=reach.host)


async def connect(
    target: PgConn | PgSource, dbname: str, *, autocommit: bool = False
) -> psycopg.AsyncConnection:
    """A connection to `dbname` on `target` (a pair's primary tried first)."""
    reach = await ordered(_conn(target))
    return await psycopg.AsyncConnection.connect(**reach.kwargs(dbname), autocommit=autocommit)


async def writable_host(target: PgConn) -> str:
    """The address of the server `target` reaches that takes writes (of a
    pair's members, the primary now), as that server sees its own address."""
    async with await connect(target, "postgres") as conn:
        row = await (await conn.execute("SELECT host(inet_server_addr())")).fetchone()
    if row is None or not row[0]:
        raise FactsError("the server that takes writes did not say its address")
    return str(row[0])


async def _snapshot_transaction(conn: psycopg.AsyncConnection) -> None:
    """Stable text settings, then a REPEATABLE READ, READ ONLY transaction."""
    await conn.set_autocommit(True)
    await _stable_session(conn)
    await conn.set_autocommit(False)
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    await conn.set_read_only(True)


async def take_facts(target: PgConn | PgSource, dbname: str) -> DbFacts:
    """The facts of `dbname` as one REPEATABLE READ transaction sees them (a
    restored copy's, to compare with those taken at backup time)."""
    conn = await connect(target, dbname)
    async with conn:
        await _snapshot_transaction(conn)
        facts = await _facts_in_transaction(conn, dbname)
        await conn.rollback()
        return facts


def _conn(target: PgConn | PgSource) -> PgConn:
    return PgConn.of(target) if isinstance(target, PgSource) else target


async def dump_with_facts(source: PgSource | PgConn, dbname: str, dest: Path) -> DbFacts:
    """`pg_dump -Fc` of `dbname` into `dest`, and the facts of the same instant."""
    # One order for both: pg_dump joins the snapshot on the server reached.
    target = await ordered(_conn(source))
    conn = await psycopg.AsyncConnection.connect(**target.kwargs(dbname))
    async with conn:
        await _snapshot_transaction(conn)
        cur = await conn.execute("SELECT pg_export_snapshot()")
        row = await cur.fetchone()
        if row is None:
            raise FactsError("pg_export_snapshot() returned nothing")
        argv = [pg_tool("pg_dump"), "-Fc", f"--snapshot={row[0]}", "--no-password",
                "-f", str(dest)]  # fmt: skip
        dump = asyncio.create_task(run_tool(argv, env=target.env(dbname), timeout=DUMP_TIMEOUT_S))
        try:
            facts = await _facts_in_transaction(conn, dbname)
        except BaseException:
            dump.cancel()
            await asyncio.gather(dump, return_exceptions=True)
            raise
        # The snapshot must outlive pg_dump's use of it: end the transaction after.
        status, out = await dump
        await conn.rollback()
    if status != 0:
        raise FactsError(f"pg_dump of {dbname} failed (status {status}): {out.strip()[-2000:]}")
    return facts


# ------------------------------------------------------------------ tools


def pg_tool(name: str, pg_bin: Path = PG_BIN) -> str:
    return str(pg_bin / name)


async def run_tool(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float,
    setup: ChildSetup | None = None,
    cwd: Path | None = None,
) -> tuple[int, str]:
    """Run a tool to completion: (status, its output, stdout and stderr together).

    Cancelled or out of time, the tool and its process group are stopped
    (TERM, a second's grace, KILL): nothing outlives its caller.
    """
    done = await proc_run.run_tool(
        argv, timeout=timeout, env={**BASE_ENV, **(env or {})}, cwd=cwd, setup=setup,
        merge_stderr=True,
    )  # fmt: skip
    return done.returncode, done.output
