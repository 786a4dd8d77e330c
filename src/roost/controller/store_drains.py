"""Log drains and each app's log retention in the state database.

Drains are desired state an owner writes (`roost drains add`); their
status rows are each controller's own counters (controller/logdrains.py),
added up when shown. Retention is a row per app that chose its own.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from roost.controller import logretention
from roost.controller.logdrain_queue import DrainCounts
from roost.controller.logretention import Retention
from roost.controller.store_access import Conflict, NotFound
from roost.state import tables as t

# A controller silent this long no longer says whether a drain is failing
# (it stopped); what it delivered and dropped still counts.
STATUS_FRESH_S = 60.0
# Rows of controllers gone this long are folded into one row per drain, so
# restarts do not pile rows up.
FOLD_AFTER_S = 3600.0
FOLDED = "*"


@dataclass(frozen=True)
class LogDrainRow:
    id: int
    app_id: int
    app: str
    url: str
    token: str
    created_at: float


class DrainStore:
    engine: Engine

    def add_log_drain(self, app_id: int, url: str) -> LogDrainRow:
        token = "d." + secrets.token_hex(15)  # 32 characters: RFC 5424 MSGID
        with self.engine.begin() as c:
            name = c.execute(select(t.apps.c.name).where(t.apps.c.id == app_id)).scalar()
            if name is None:
                raise NotFound(f"no app with id {app_id}")
            try:
                with c.begin_nested():
                    now = time.time()
                    drain_id = c.execute(
                        insert(t.log_drains)
                        .values(app_id=app_id, url=url, token=token, created_at=now)
                        .returning(t.log_drains.c.id)
                    ).scalar_one()
            except IntegrityError:
                raise Conflict(f"{name} already drains to {url}") from None
        return LogDrainRow(int(drain_id), app_id, name, url, token, now)

    def remove_log_drain(self, app_id: int, drain_id: int) -> bool:
        with self.engine.begin() as c:
            c.execute(delete(t.log_drain_status).where(t.log_drain_status.c.drain_id == drain_id))
            gone = c.execute(
                delete(t.log_drains).where(
                    t.log_drains.c.id == drain_id, t.log_drains.c.app_id == app_id
                )
            )
            return bool(gone.rowcount)

    def log_drains(self, app_id: int | None = None) -> list[LogDrainRow]:
        q = (
            select(t.log_drains, t.apps.c.name)
            .join(t.apps, t.apps.c.id == t.log_drains.c.app_id)
            .order_by(t.log_drains.c.id)
        )
        if app_id is not None:
            q = q.where(t.log_drains.c.app_id == app_id)
        with self.engine.connect() as c:
            return [
                LogDrainRow(r.id, r.app_id, r.name, r.url, r.token, r.created_at)
                for r in c.execute(q)
            ]

    def note_drain_status(self, holder: str, counts: dict[int, DrainCounts]) -> None:
        """This controller's counters (since it started) for the drains in `counts`."""
        now = time.time()
        with self.engine.begin() as c:
            known = set(
                c.execute(
                    select(t.log_drains.c.id).where(t.log_drains.c.id.in_(list(counts)))
                ).scalars()
            )
            for drain_id, k in counts.items():
                if drain_id not in known:
                    continue  # removed meanwhile
                values = {
                    "delivered": k.delivered,
                    "dropped": k.dropped,
                    "failing": k.failing,
                    "last_error": k.last_error,
                    "last_ok_at": k.last_ok_at,
                    "last_error_at": k.last_error_at,
                    "updated_at": now,
                }
                s = t.log_drain_status.c
                done = c.execute(
                    update(t.log_drain_status)
                    .where(s.drain_id == drain_id, s.holder == holder)
                    .values(**values)
                )
                if not done.rowcount:
                    c.execute(
                        insert(t.log_drain_status).values(
                            drain_id=drain_id, holder=holder, **values
                        )
                    )
            _fold_stale(c, now - FOLD_AFTER_S)

    def drain_status(self, drain_ids: list[int]) -> dict[int, DrainCounts]:
        """Every controller's counters for each drain, added up."""
        s = t.log_drain_status.c
        fresh = time.time() - STATUS_FRESH_S
        with self.engine.connect() as c:
            rows = list(c.execute(select(t.log_drain_status).where(s.drain_id.in_(drain_ids))))
        out: dict[int, DrainCounts] = {}
        for drain_id in drain_ids:
            mine = [r for r in rows if r.drain_id == drain_id]
            errors = [r for r in mine if r.last_error_at is not None]
            last = max(errors, key=lambda r: r.last_error_at, default=None)
            oks = [r.last_ok_at for r in mine if r.last_ok_at is not None]
            out[drain_id] = DrainCounts(
                delivered=sum(r.delivered for r in mine),
                dropped=sum(r.dropped for r in mine),
                failing=any(r.failing and r.updated_at >= fresh for r in mine),
                last_error=last.last_error if last is not None else "",
                last_ok_at=max(oks, default=None),
                last_error_at=last.last_error_at if last is not None else None,
            )
        return out

    def set_log_retention(self, app_id: int, lines: int | None, days: float | None) -> None:
        with self.engine.begin() as c:
            c.execute(delete(t.log_retention).where(t.log_retention.c.app_id == app_id))
            if lines is not None or days is not None:
                c.execute(insert(t.log_retention).values(app_id=app_id, lines=lines, days=days))

    def log_retention(self) -> dict[int, Retention]:
        """The apps that chose their own retention."""
        with self.engine.connect() as c:
            return {
                r.app_id: Retention(r.lines, r.days) for r in c.execute(select(t.log_retention))
            }


def _fold_stale(c: Connection, before: float) -> None:
    """Rows of controllers not heard from since `before` added into each
    drain's FOLDED row, then gone."""
    s = t.log_drain_status.c
    stale = list(
        c.execute(
            select(
                s.drain_id,
                func.sum(s.delivered).label("delivered"),
                func.sum(s.dropped).label("dropped"),
                func.max(s.last_ok_at).label("last_ok_at"),
            )
            .where(s.updated_at < before, s.holder != FOLDED)
            .group_by(s.drain_id)
        )
    )
    for r in stale:
        folded = c.execute(
            update(t.log_drain_status)
            .where(s.drain_id == r.drain_id, s.holder == FOLDED)
            .values(
                delivered=s.delivered + r.delivered,
                dropped=s.dropped + r.dropped,
                last_ok_at=func.coalesce(r.last_ok_at, s.last_ok_at),
            )
        )
        if not folded.rowcount:
            c.execute(
                insert(t.log_drain_status).values(
                    drain_id=r.drain_id,
                    holder=FOLDED,
                    delivered=r.delivered,
                    dropped=r.dropped,
                    failing=False,
                    last_error="",
                    last_ok_at=r.last_ok_at,
                    last_error_at=None,
                    updated_at=before,
                )
            )
    c.execute(delete(t.log_drain_status).where(s.updated_at < before, s.holder != FOLDED))


def trim_log_lines(c: Connection, trims: list[logretention.Trim]) -> None:
    """Apply `trims` (logretention.plan) to the log store."""
    ll = t.log_lines.c
    for trim in trims:
        if trim.keep_lines is not None:
            cutoff = c.execute(
                select(ll.id)
                .where(ll.app_id == trim.app_id)
                .order_by(ll.id.desc())
                .offset(trim.keep_lines)
                .limit(1)
            ).scalar()
            if cutoff is not None:
                c.execute(delete(t.log_lines).where(ll.app_id == trim.app_id, ll.id <= cutoff))
        if trim.before is not None:
            c.execute(delete(t.log_lines).where(ll.app_id == trim.app_id, ll.ts < trim.before))
