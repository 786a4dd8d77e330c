"""Engine creation and migrations for the state database.

SQLite (WAL, foreign keys on) is the default on one host; PostgreSQL URLs
work unchanged. The schema is created only by Alembic migrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, text

from roost.state import hostorder

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_engine(url: str, order: hostorder.HostOrder | None = None) -> Engine:
    """The state database's engine. `order`: how a multi-host PostgreSQL
    URL's members are to be tried, the primary first (hostorder; asked
    before a new connection, its answer kept a second or two); nothing is
    asked for SQLite or a single host."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # A controller cut off from the database must fail fast (its lease expires
    # on its own clock anyway), not block until TCP gives up.
    engine = create_engine(url, pool_pre_ping=True, connect_args=PG_CONNECT_ARGS)
    if order is not None:
        hostorder.install(engine, hostorder.PrimaryFirst(order))
    return engine


# How a PostgreSQL connection notices a server that vanished without closing
# it (its host powered off, or cut off): unacknowledged data for 10 s
# (tcp_user_timeout), or an idle wait answered by no keepalive for about
# 11 s, fails the connection instead of hanging until TCP's own ~15 minutes.
# Then the pool's pre-ping (at checkout) or the failed statement discards
# it, and the next connection goes, through a multi-host URL with
# target_session_attrs=read-write, to whichever member is the primary now.
# A statement that failed so is never retried here: its transaction's
# commit may have happened, and the caller (an API request) reports the
# error rather than write twice.
#
# The server's side of the same connection, set per session (`options`):
# a controller whose host loses power in the middle of a transaction (the
# lease's UPDATE, a deploy's rows) leaves its backend waiting for input
# that never comes and its row locks held, so the next holder's UPDATE of
# the lease row waited behind them: until the server's own TCP keepalive,
# two hours by Linux's default. With these the server drops such a client
# within ~11 s too, and its locks go with it (test_statedb_dead_client).
PG_SERVER_SIDE = (
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
    "-c tcp_keepalives_count=3 -c tcp_user_timeout=10000"
)
PG_CONNECT_ARGS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "options": PG_SERVER_SIDE,
}


def alembic_config(url: str) -> Config:
    # Alembic is imported only here, where it is used: a controller migrates
    # in a child (roost.state.migrator) and never loads it itself (issue 21).
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Arbitrary constant: the advisory lock that serialises migrations.
MIGRATION_LOCK = 0x526F6F7374  # "Roost"


def migrate(url: str) -> None:
    """Bring the database to the newest schema (idempotent).

    On PostgreSQL, controllers starting together take turns (a session-level
    advisory lock), so two never race to create the same tables.
    """
    from alembic import command

    if not url.startswith("postgresql"):
        command.upgrade(alembic_config(url), "head")
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                command.upgrade(alembic_config(url), "head")
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
    finally:
        engine.dispose()
