"""The SQL of a PostgreSQL restore's steps on the servicehost (restores.py
orders them; backuprole.py says why the backup role writes only here).

Every step is idempotent: it looks at what exists and does what is left, so
a step repeated after a timeout or a crash half-way finishes the job.
Identifiers are always quoted (`sql.Identifier`).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from roost.servicehost.backuprole import SYSTEM_SCHEMAS, grant_connect
from roost.servicehost.names import BACKUP_ROLE
from roost.servicehost.pgadmin import Postgres

BACKUP = sql.Identifier(BACKUP_ROLE)


async def exists(conn: psycopg.AsyncConnection, database: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
    return await cur.fetchone() is not None


async def role_exists(pg: Postgres, name: str) -> bool:
    async with await pg.connect() as conn:
        cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        return await cur.fetchone() is not None


async def database_exists(pg: Postgres, name: str) -> bool:
    async with await pg.connect() as conn:
        return await exists(conn, name)


async def prepare(pg: Postgres, database: str, owner: str) -> None:
    """An empty `database` owned by the app's role `owner`, opened as the
    app's own is (CONNECT for it, nothing for PUBLIC), where the backup role
    may create (and so load a dump)."""
    db, own = sql.Identifier(database), sql.Identifier(owner)
    async with await pg.connect() as conn:
        if not await exists(conn, database):
            await conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    db, own
                )
            )
        await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        await conn.execute(sql.SQL("GRANT CONNECT, TEMP ON DATABASE {} TO {}").format(db, own))
        await conn.execute(
            sql.SQL("GRANT CONNECT, CREATE, TEMP ON DATABASE {} TO {}").format(db, BACKUP)
        )
    async with await pg.connect(dbname=database) as conn:
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(own))
        await conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(BACKUP))


async def hand_over(pg: Postgres, database: str, owner: str) -> None:
    """Give everything in the loaded `database` to `owner` and leave the
    backup role only what it has on an app's database: CONNECT and reading."""
    db = sql.Identifier(database)
    async with await pg.connect(dbname=database) as conn:
        await conn.execute(
            sql.SQL("REASSIGN OWNED BY {} TO {}").format(BACKUP, sql.Identifier(owner))
        )
        cur = await conn.execute(
            "SELECT nspname FROM pg_namespace WHERE NOT nspname = ANY(%s)"
            " AND nspname NOT LIKE 'pg_temp_%%' AND nspname NOT LIKE 'pg_toast_temp_%%'",
            (list(SYSTEM_SCHEMAS),),
        )
        # Whatever the backup role granted while it owned the objects (to
        # itself through PUBLIC, or by name) stays with them: take it back.
        # A dump loaded with --no-privileges brings no grant of its own.
        for (schema,) in await cur.fetchall():
            s = sql.Identifier(schema)
            for kind in ("TABLES", "SEQUENCES", "ROUTINES"):
                await conn.execute(
                    sql.SQL(f"REVOKE ALL ON ALL {kind} IN SCHEMA {{}} FROM PUBLIC, {{}}").format(
                        s, BACKUP
                    )
                )
            await conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC, {}").format(s, BACKUP))
        cur = await conn.execute("SELECT oid FROM pg_largeobject_metadata WHERE lomacl IS NOT NULL")
        for (oid,) in await cur.fetchall():
            await conn.execute(
                sql.SQL("REVOKE ALL ON LARGE OBJECT {} FROM PUBLIC, {}").format(
                    sql.Literal(int(oid)), BACKUP
                )
            )
    async with await pg.connect() as conn:
        await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC, {}").format(db, BACKUP))
        await grant_connect(conn, database)


async def retire(pg: Postgres, database: str, kept: str) -> None:
    """Rename the app's `database` to `kept`: no new session may open it
    first, then those it has are ended (a rename waits for none)."""
    async with await pg.connect() as conn:
        if not await exists(conn, kept):
            if not await exists(conn, database):
                return  # nothing to keep
            await _rename(conn, database, kept)
        # Kept for the operator: its ACL lets the app's role and the backup
        # role in, and pg_hba lets neither the app nor anyone else reach it.
        await _allow(conn, kept)


async def promote(pg: Postgres, prepared: str, dest: str) -> None:
    """Rename the loaded `prepared` database to `dest` (once the app's is out
    of the way), ending backupd's sessions on it."""
    async with await pg.connect() as conn:
        if await exists(conn, prepared):
            await _rename(conn, prepared, dest)
        await _allow(conn, dest)  # (also when a repeated swap finds it renamed)


async def _rename(conn: psycopg.AsyncConnection, old: str, new: str) -> None:
    """A rename waits for no session: none may open the database meanwhile,
    and those it has are ended (PostgreSQL then waits up to 5 s for them)."""
    await conn.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(old))
    )
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (old,),
    )
    await conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


async def _allow(conn: psycopg.AsyncConnection, database: str) -> None:
    await conn.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(database))
    )


async def drop(pg: Postgres, database: str) -> None:
    async with await pg.connect() as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
