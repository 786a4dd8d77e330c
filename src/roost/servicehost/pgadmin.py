"""Per-app databases on the cluster: create, drop, size, dump (admin SQL).

Every step is idempotent, so a provision or removal interrupted half-way is
finished by simply asking again. Identifiers are always quoted
(`sql.Identifier`), passwords always literals (`sql.Literal`): DDL cannot take
bound parameters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import sql

from roost.servicehost.binaries import Binaries
from roost.servicehost.spawn import run_tool

DUMP_TIMEOUT_S = 3600.0


class Superuser(Protocol):
    @property
    def superuser(self) -> str: ...


class Postgres(Protocol):
    """What these steps need of a PostgreSQL: the servicehost's own
    (postgres.Postgres) or its pair's primary (pairdb.PairAdmin)."""

    @property
    def bins(self) -> Binaries: ...
    @property
    def cluster(self) -> Superuser: ...
    async def connect(
        self, dbname: str = "postgres", timeout: int = 5
    ) -> psycopg.AsyncConnection: ...
    async def tool_env(self) -> dict[str, str]: ...


async def ensure_database(pg: Postgres, name: str, password: str, connection_limit: int) -> None:
    """Role `name` (login, this password, at most `connection_limit` sessions,
    nothing else) owning database `name`."""
    ident = sql.Identifier(name)
    async with await pg.connect() as conn:
        cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        verb = "ALTER" if await cur.fetchone() else "CREATE"
        await conn.execute(
            sql.SQL(
                verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS CONNECTION LIMIT {} PASSWORD {}"
            ).format(ident, sql.Literal(connection_limit), sql.Literal(password))
        )
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if not await cur.fetchone():
            await conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    ident, ident
                )
            )
        # PUBLIC gets CONNECT and TEMP on new databases by default: take them
        # back, so only the owner (and the superuser) can open this one.
        await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
        await conn.execute(sql.SQL("GRANT CONNECT, TEMP ON DATABASE {} TO {}").format(ident, ident))
    async with await pg.connect(dbname=name) as conn:
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(ident))


async def set_connection_limits(pg: Postgres, roles: list[str], limit: int) -> int:
    """ALTER ROLE ... CONNECTION LIMIT on those of `roles` that differ; how many changed.

    Sessions already open are not cut: the limit refuses new ones past it.
    """
    changed = 0
    async with await pg.connect() as conn:
        cur = await conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND rolconnlimit <> %s",
            (roles, limit),
        )
        for (role,) in await cur.fetchall():
            await conn.execute(
                sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                    sql.Identifier(role), sql.Literal(limit)
                )
            )
            changed += 1
    return changed


async def role_connections(pg: Postgres) -> dict[str, tuple[int, int]]:
    """role -> (its CONNECTION LIMIT, -1 for none; its sessions open now), apps' roles only."""
    async with await pg.connect(timeout=2) as conn:
        cur = await conn.execute(
            "SELECT r.rolname, r.rolconnlimit,"
            " (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname)"
            " FROM pg_roles r WHERE r.rolcanlogin AND NOT r.rolsuper"
        )
        return {str(name): (int(limit), int(n)) for name, limit, n in await cur.fetchall()}


async def database_exists(pg: Postgres, name: str) -> bool:
    async with await pg.connect() as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return await cur.fetchone() is not None


async def drop_database(pg: Postgres, name: str) -> None:
    """Drop database and role `name`, closing its sessions first.

    Other databases the role owns (a restore's prepared, kept or `--to`
    ones) stay, handed to the superuser, since a role that owns anything
    cannot be dropped.
    """
    ident = sql.Identifier(name)
    su = sql.Identifier(pg.cluster.superuser)
    async with await pg.connect() as conn:
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        cur = await conn.execute(
            "SELECT d.datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
            " WHERE r.rolname = %s",
            (name,),
        )
        others = [str(d) for (d,) in await cur.fetchall()]
    for db in others:
        async with await pg.connect(dbname=db) as conn:
            await conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, su))
            await conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
    async with await pg.connect() as conn:
        cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        if await cur.fetchone():
            # Its grants on shared objects (CONNECT on those databases) go too.
            await conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            await conn.execute(sql.SQL("DROP ROLE {}").format(ident))


async def database_sizes(pg: Postgres) -> dict[str, int]:
    async with await pg.connect(timeout=2) as conn:
        cur = await conn.execute(
            "SELECT datname, pg_database_size(oid) FROM pg_database WHERE NOT datistemplate"
        )
        return {str(name): int(size) for name, size in await cur.fetchall()}


async def dump(pg: Postgres, name: str, dest: Path) -> int:
    """pg_dump -Fc of database `name` into `dest` (atomically); its size."""
    tmp = dest.with_name(dest.name + ".partial")
    status, out = await run_tool(
        [pg.bins.pg("pg_dump"), "--format=custom", "--file", str(tmp), "--dbname", name],
        env=await pg.tool_env(),
        timeout=DUMP_TIMEOUT_S,
    )
    if status != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"pg_dump of {name} failed (status {status}): {out.strip()[-1000:]}")
    os.chmod(tmp, 0o600)
    os.replace(tmp, dest)
    return dest.stat().st_size
