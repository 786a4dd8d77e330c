"""The reconcile's snapshot reads: apps, formations and placements as plain tuples.

A reconcile pass compares these with the previous pass's rows (see
roost.controller.desired), so they are fetched as plain DBAPI tuples from
statements compiled once: SQLAlchemy Row objects cost more than the query
at thousands of rows. Rows come sorted by Python, not by the database,
whose collation may differ and whose order the reader predicts after its
own writes; each row starts with a unique key, so no None is compared.

Reading them at all is skipped when nothing changed: every write to what
the reconcile reads (apps, releases, formation, placements, domains,
certificates) counts itself in the `desired` row of `id_counters`, in its
own transaction (`bump_desired`). The lease holder reads that one number
first; an unchanged count means an unchanged snapshot.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, case, insert, select, update
from sqlalchemy.exc import IntegrityError

from roost.state import tables as t

DESIRED = "desired"
# The count wraps here (the column is a 32-bit integer on PostgreSQL): a
# reader only asks whether it moved.
_WRAP = 2_000_000_000

APPS = select(
    t.apps.c.id,
    t.apps.c.name,
    t.apps.c.owner_id,
    t.apps.c.suspended,
    t.apps.c.current_release,
    t.apps.c.created_at,
    t.apps.c.data_quota_mb,
)
FORMATION = select(
    t.formation.c.app_id,
    t.formation.c.process_type,
    t.formation.c.quantity,
    t.formation.c.memory_mb,
)
# Columns in roost.controller.scheduler.Placement's field order.
PLACEMENTS = select(
    t.placements.c.instance_id,
    t.apps.c.name,
    t.placements.c.release,
    t.placements.c.process_type,
    t.placements.c.idx,
    t.placements.c.host_id,
).join(t.apps, t.apps.c.id == t.placements.c.app_id)

SNAPSHOT = {"apps": APPS, "formation": FORMATION, "placements": PLACEMENTS}


def bump_desired(c: Connection) -> int:
    """Count one change to desired state in the writer's transaction; the new count."""
    value = t.id_counters.c.value
    new = c.execute(
        update(t.id_counters)
        .where(t.id_counters.c.name == DESIRED)
        .values(value=case((value >= _WRAP, 1), else_=value + 1))
        .returning(value)
    ).scalar()
    if new is not None:
        return int(new)
    try:  # the first change since the table was made
        with c.begin_nested():
            c.execute(insert(t.id_counters).values(name=DESIRED, value=1))
    except IntegrityError:  # another writer made the row first
        return bump_desired(c)
    return 1


class SnapshotStore:
    engine: Engine
    _snapshot_sql: dict[str, str] | None = None

    def desired_version(self) -> int:
        """The count of changes to desired state so far (see the module docstring)."""
        with self.engine.connect() as c:
            row = c.execute(
                select(t.id_counters.c.value).where(t.id_counters.c.name == DESIRED)
            ).first()
        return int(row.value) if row is not None else 0

    def snapshot_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """{"apps", "formation", "placements"}: each table's rows, sorted tuples."""
        if self._snapshot_sql is None:
            dialect = self.engine.dialect
            self._snapshot_sql = {n: str(q.compile(dialect=dialect)) for n, q in SNAPSHOT.items()}
        with self.engine.connect() as c:
            cur = c.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                out = {}
                for name, sql in self._snapshot_sql.items():
                    cur.execute(sql)
                    out[name] = sorted(tuple(r) for r in cur.fetchall())
                return out
            finally:
                cur.close()
