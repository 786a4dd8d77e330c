"""Log trimming keeps each app's newest lines, looking only at apps that logged."""

from __future__ import annotations

import time

from sqlalchemy import insert

from roost.controller.store import Store
from roost.state import tables as t
from roost.wire.messages import LogLine


def _lines(app: str, n: int, start: int = 0) -> list[LogLine]:
    return [
        LogLine(app=app, ts=time.time(), source="app", process="web.1", line=f"{app} {i}")
        for i in range(start, start + n)
    ]


def test_trim_keeps_the_newest_lines_of_the_apps_that_logged(store: Store) -> None:
    owner = store.create_account("o@example.com")
    busy, quiet = store.create_app("busy", owner), store.create_app("quiet", owner)
    store.append_logs(_lines("busy", 10) + _lines("quiet", 3))
    store.trim_logs(keep=4)
    assert [r.line for r in store.logs(busy.id)] == [f"busy {i}" for i in range(6, 10)]
    assert len(store.logs(quiet.id)) == 3  # never fewer than it had
    # Lines another replica wrote are its to trim: this one looks only at
    # the apps it wrote lines for since its last trim.
    with store.engine.begin() as c:
        c.execute(insert(t.log_lines), [
            {"app_id": quiet.id, "ts": 0.0, "source": "app", "process": "", "stream": "stdout",
             "line": f"other {i}"} for i in range(5)
        ])  # fmt: skip
    store.trim_logs(keep=4)
    assert len(store.logs(quiet.id)) == 8
    store.append_logs(_lines("quiet", 1, start=3))
    store.trim_logs(keep=4)
    assert [r.line for r in store.logs(quiet.id)] == [
        *(f"other {i}" for i in (2, 3, 4)),
        "quiet 3",
    ]
    assert len(store.logs(busy.id)) == 4
