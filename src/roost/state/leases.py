"""Leases with fencing tokens, timed on the database's clock.

Theory of operation: a lease is one row (name, holder, token, expires_at).
`acquire` is a single conditional UPDATE: it succeeds when the caller already
holds the lease or the lease has expired *by the database's clock*, so pauses
or skew on the controllers cannot make two of them believe they hold it past
expiry by their own clocks. The token grows by one each time the holder
changes; every command the holder sends carries it, and receivers refuse a
token lower than one they have seen (fencing), so a paused ex-holder that
wakes up cannot overwrite its successor's decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, case, literal, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from roost.state.tables import leases


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    token: int
    expires_at: float


def db_now(engine: Engine) -> ColumnElement[float]:
    """Seconds since the epoch, evaluated by the database server."""
    if engine.dialect.name == "sqlite":
        return text("((julianday('now') - 2440587.5) * 86400.0)")  # type: ignore[return-value]
    return text("extract(epoch from clock_timestamp())")  # type: ignore[return-value]


def acquire(engine: Engine, name: str, holder: str, ttl: float) -> Lease | None:
    """Take or renew lease `name` for `ttl` seconds; None when another holds it."""
    now = db_now(engine)
    with engine.begin() as conn:
        result = conn.execute(
            update(leases)
            .where(leases.c.name == name)
            .where((leases.c.holder == holder) | (leases.c.expires_at < now))
            .values(
                token=case((leases.c.holder == holder, leases.c.token), else_=leases.c.token + 1),
                holder=holder,
                expires_at=now + literal(ttl),
            )
        )
        if result.rowcount == 0:
            exists = conn.execute(select(leases.c.name).where(leases.c.name == name)).first()
            if exists is not None:
                return None
            try:
                with conn.begin_nested():
                    conn.execute(
                        leases.insert().values(
                            name=name, holder=holder, token=1, expires_at=now + literal(ttl)
                        )
                    )
            except IntegrityError:
                return None  # another controller created it first
        row = conn.execute(select(leases).where(leases.c.name == name)).one()
    if row.holder != holder:
        return None
    return Lease(name=row.name, holder=row.holder, token=row.token, expires_at=row.expires_at)


def release(engine: Engine, name: str, holder: str) -> None:
    """Give the lease up early (clean shutdown) so a successor need not wait."""
    with engine.begin() as conn:
        conn.execute(
            update(leases)
            .where(leases.c.name == name, leases.c.holder == holder)
            .values(expires_at=0.0)
        )


def current(engine: Engine, name: str) -> Lease | None:
    with engine.connect() as conn:
        row = conn.execute(select(leases).where(leases.c.name == name)).first()
    if row is None:
        return None
    return Lease(name=row.name, holder=row.holder, token=row.token, expires_at=row.expires_at)
