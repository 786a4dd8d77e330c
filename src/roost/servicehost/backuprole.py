"""The PostgreSQL role backupd pulls with (`roost_backup`), and what it may do.

Theory of operation: backupd takes base backups and streams WAL (Barman,
backup_method=postgres: pg_basebackup and pg_receivewal with a slot), dumps
each app's database (pg_dump) and, for a restore, loads a prepared one. So
the role has REPLICATION; pg_read_all_data (every table, read-only);
BYPASSRLS, since an app may enable row-level security on its tables (even
FORCE it on itself as their owner) and pg_dump and the facts, which run with
row_security off, must see every row or fail (BYPASSRLS only exempts the
role from policies: it grants no privilege, so no write);
pg_checkpoint, pg_read_all_settings and pg_read_all_stats and EXECUTE on
pg_backup_start/stop, pg_switch_wal and pg_create_restore_point (what Barman
3.4 asks of a non-superuser; functions carry their grants per database, and
Barman's conninfo names `postgres`); CONNECT on `postgres` and on every app's
database. pg_hba admits it from loopback and backupd's hosts only.

What it may not do is write to an app's database. It is a member of no
app's role (a member may SET ROLE to it: write its tables, or DROP its
database as its owner, from any other database it can open). The only
databases it may write are those a restore prepared (restores.py): it is
given CREATE there, loads the dump as itself with --no-owner, and at the
swap the superuser hands every object to the app's role (REASSIGN OWNED)
and takes back the role's CREATE and any grant made in the meantime, to it
or to PUBLIC, before the database serves the app.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from roost.servicehost.names import BACKUP_ROLE
from roost.servicehost.pgadmin import Postgres

BARMAN_FUNCTIONS = (
    "pg_backup_start(text, boolean)",
    "pg_backup_stop(boolean)",
    "pg_switch_wal()",
    "pg_create_restore_point(text)",
)
PREDEFINED_ROLES = (
    "pg_read_all_data",
    "pg_checkpoint",
    "pg_read_all_settings",
    "pg_read_all_stats",
)
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


# pg_advisory_lock's key for making and granting the backup role (any bigint
# no other part of Roost locks: "roost_bk" in ASCII).
ROLE_LOCK_KEY = 0x726F6F73745F626B


async def ensure_backup_role(pg: Postgres, password: str, databases: list[str]) -> None:
    """The backup role as the module docstring says, CONNECT on `databases` too.

    One caller at a time per PostgreSQL cluster, whatever process it is in:
    both servicehosts of a pair make the role on the pair's one primary, and
    two backupds ask at once; side by side both CREATE it ("duplicate key
    value ... pg_authid_rolname_index") or their GRANTs collide ("tuple
    concurrently updated"), the request is refused, and backupd keeps its
    last view of what the servicehost holds (a database added since is
    missed). The lock is the session's: it goes with the connection."""
    role = sql.Identifier(BACKUP_ROLE)
    async with await pg.connect() as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (ROLE_LOCK_KEY,))
        cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BACKUP_ROLE,))
        verb = "ALTER" if await cur.fetchone() else "CREATE"
        await conn.execute(
            sql.SQL(
                verb + " ROLE {} LOGIN REPLICATION INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
                "BYPASSRLS PASSWORD {}"
            ).format(role, sql.Literal(password))
        )
        for predefined in PREDEFINED_ROLES:
            await conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(predefined), role))
        for fn in BARMAN_FUNCTIONS:
            await conn.execute(sql.SQL(f"GRANT EXECUTE ON FUNCTION {fn} TO {{}}").format(role))
        # A membership it was ever given, by hand or by anything else, goes:
        # through one it could become an app's role (module docstring).
        cur = await conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s AND NOT g.rolname = ANY(%s)",
            (BACKUP_ROLE, list(PREDEFINED_ROLES)),
        )
        for (other,) in await cur.fetchall():
            await conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(other), role))
        for db in ["postgres", *databases]:
            await grant_connect(conn, db)


async def grant_connect(conn: psycopg.AsyncConnection, database: str) -> None:
    """CONNECT (only) on `database` for the backup role; `conn` an admin connection."""
    await conn.execute(
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(database), sql.Identifier(BACKUP_ROLE)
        )
    )


async def allow_database(pg: Postgres, database: str) -> None:
    """CONNECT on a new app's database, for a backup role that exists."""
    async with await pg.connect() as conn:
        await grant_connect(conn, database)
