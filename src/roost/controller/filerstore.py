"""The shared tree's filers' store, made at the controller's start.

With `--state` (a PostgreSQL the operator runs) nothing else makes the
filers' role and database (roost.datadir.weedstore says why they have their
own): the controller that runs a filer makes them through its own state
URL, which needs CREATEROLE and CREATEDB, before its filer can start (the
filer is restarted with backoff until then). Under Patroni the bootstrap
made them and `ensure` finds them usable. Blocking functions: call them in
a thread.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import sqlalchemy
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from roost.controller.stateorder import ordered_url
from roost.datadir.weedplan import FilerStore
from roost.datadir.weedstore import statements
from roost.state import hostorder

log = logging.getLogger("roost.datadir.weed")

RETRY_S = 15.0


def store_url(store: FilerStore) -> str:
    """A SQLAlchemy URL logging in as the store's own role (libpq's host list)."""
    hosts = ",".join(store.hosts)
    ports = ",".join(str(store.port) for _ in store.hosts)
    return (
        f"postgresql+psycopg://{store.user}:{store.password}@/{store.database}"
        f"?host={hosts}&port={ports}&target_session_attrs=read-write"
    )


def usable(store: FilerStore) -> bool:
    """Can the filers log in to their database as the plan says?"""
    engine = sqlalchemy.create_engine(store_url(store), connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as db:
            db.execute(sqlalchemy.text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def ensure(admin_url: str, store: FilerStore) -> None:
    """The store's role (its password as the plan says) and database exist
    (blocking). Already usable (made by Patroni's bootstrap, an operator or
    the other controller): nothing to do. Two controllers may race: what
    the other made is taken."""
    create_role, create_db = statements(store)
    if usable(store):
        return
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as db:
            role = db.execute(
                sqlalchemy.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": store.user}
            ).first()
            try:
                if role is None:
                    db.execute(sqlalchemy.text(create_role))
                    log.info("shared tree: made the filers' role %s", store.user)
                else:  # its password as this plan says (a bundle from a later init)
                    db.execute(sqlalchemy.text(create_role.replace("CREATE", "ALTER", 1)))
            except (IntegrityError, ProgrammingError) as exc:
                if "already exists" not in str(exc):
                    raise
            have = db.execute(
                sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                {"n": store.database},
            ).first()
            if have is None:
                try:
                    db.execute(sqlalchemy.text(create_db))
                    log.info("shared tree: made the filers' database %s", store.database)
                except (IntegrityError, ProgrammingError) as exc:
                    if "already exists" not in str(exc):
                        raise
    finally:
        engine.dispose()


async def keep_ensured(
    url: str, store: FilerStore, every_s: float = RETRY_S, rest_port: int = 0
) -> None:
    """`ensure` until it has succeeded once (a task beside the filer this
    controller runs); each failure logged with what an operator can run.
    Each try lists the state database's members the primary first
    (stateorder; `rest_port`: their Patroni REST port, 0 when not known)."""
    while True:
        try:
            admin = await ordered_url(url, rest_port)
            await asyncio.to_thread(ensure, admin, _in_order_of(admin, store))
            return
        except Exception as exc:  # the filers wait; the controller goes on
            hidden = "<appdata.json's>"  # the password, in the SQL an error quotes too
            log.error(
                "shared tree: cannot make the filers' store (%s); as a PostgreSQL superuser: %s",
                str(exc).replace(store.password, hidden),
                "; ".join(s.replace(store.password, hidden) for s in statements(store)),
            )
        await asyncio.sleep(every_s)


def _in_order_of(url: str, store: FilerStore) -> FilerStore:
    """`store` with its hosts in the order `url` lists them (the same
    PostgreSQL: store_for took them from the state URL)."""
    m = hostorder.url_members(url)
    if m is None:
        return store
    given = hostorder.Members(tuple(store.hosts), store.port)
    return msgspec.structs.replace(store, hosts=hostorder.arranged(given, m.hosts))
