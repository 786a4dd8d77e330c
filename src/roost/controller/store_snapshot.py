"""The reconcile's snapshot reads: apps, formations and placements as plain tuples.

A reconcile pass compares these with the previous pass's rows (see
roost.controller.desired), so they are fetched as plain DBAPI tuples from
statements compiled once: SQLAlchemy Row objects cost more than the query
at thousands of rows. Rows come sorted by Python, not by the database,
whose collation may differ and whose order the reader predicts after its
own writes; each row starts with a unique key, so no None is compared.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from roost.state import tables as t

APPS = select(
    t.apps.c.id,
    t.apps.c.name,
    t.apps.c.owner_id,
    t.apps.c.suspended,
    t.apps.c.current_release,
    t.apps.c.created_at,
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


class SnapshotStore:
    engine: Engine
    _snapshot_sql: dict[str, str] | None = None

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
