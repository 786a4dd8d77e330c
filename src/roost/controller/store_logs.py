"""Writing log lines inside a caller's transaction.

A deploy's closing lines ("v3 is live", "build failed: ...") are written in
the same transaction as the stage that ends it: a build stream that reads
the final stage has then read every line before it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, insert, select

from roost.state import tables as t
from roost.wire.messages import LogLine


def insert_log_lines(c: Connection, lines: Sequence[LogLine]) -> set[int]:
    """Insert `lines` (those of apps that exist); the ids of their apps."""
    if not lines:
        return set()
    names = {ln.app for ln in lines}
    ids = {
        r.name: r.id
        for r in c.execute(select(t.apps.c.id, t.apps.c.name).where(t.apps.c.name.in_(names)))
    }
    rows = [
        {
            "app_id": ids[ln.app],
            "ts": ln.ts,
            "source": ln.source,
            "process": ln.process,
            "stream": ln.stream,
            "line": ln.line,
        }
        for ln in lines
        if ln.app in ids
    ]
    if rows:
        c.execute(insert(t.log_lines), rows)
    return set(ids.values())
