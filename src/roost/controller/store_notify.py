"""Alert targets, alerts and their deliveries (controller/notify.py tells the story)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, delete, func, insert, or_, select, update

from roost.controller.notify import KINDS, Alert, Outcome, parse_target, redact
from roost.controller.secretbox import SecretBox
from roost.state import tables as t


@dataclass(frozen=True)
class TargetRow:
    id: int
    app: str  # "" for a platform-wide target
    app_id: int | None
    url: str  # redacted
    created_at: float
    # Its deliveries: how many are in each state, and the last error seen.
    pending: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str = ""
    last_at: float | None = None


@dataclass(frozen=True)
class Due:
    """A delivery whose try is due, with what sending it needs."""

    delivery_id: int
    attempts: int
    alert: Alert
    target_id: int
    url: str  # as given, with its password
    secret: str
    trusted: bool = False  # an operator's: may reach private addresses


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    target_id: int
    kind: str
    app: str
    message: str
    ts: float
    state: str
    attempts: int
    next_at: float
    last_at: float | None
    last_error: str


class NotifyStore:
    engine: Engine
    secrets: SecretBox | None

    def _box(self) -> SecretBox:
        if self.secrets is None:
            raise RuntimeError("this store has no secrets key: a target's secret is never clear")
        return self.secrets

    def add_notify_target(
        self, app_id: int | None, url: str, secret: str = "", trusted: bool = False
    ) -> int:
        """A new target; BadTarget when the URL is malformed (nothing is written).
        `trusted`: added by an operator, so it may reach private addresses."""
        parse_target(url)
        sealed = self._box().seal({"url": url.strip(), "secret": secret})
        with self.engine.begin() as c:
            return int(
                c.execute(
                    insert(t.notify_targets).values(
                        app_id=app_id, url=redact(url.strip()), sealed=sealed,
                        created_at=time.time(), trusted=trusted,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )  # fmt: skip

    def notify_target(self, target_id: int) -> TargetRow | None:
        rows = self._targets(t.notify_targets.c.id == target_id)
        return rows[0] if rows else None

    def notify_targets(self, app_ids: set[int] | None = None) -> list[TargetRow]:
        """Every target, or the targets of `app_ids` (no platform-wide one)."""
        if app_ids is None:
            return self._targets(None)
        return self._targets(t.notify_targets.c.app_id.in_(app_ids))

    def _targets(self, where: Any) -> list[TargetRow]:
        nt, d = t.notify_targets, t.notify_deliveries
        q = (
            select(nt.c.id, nt.c.app_id, nt.c.url, nt.c.created_at, t.apps.c.name)
            .outerjoin(t.apps, t.apps.c.id == nt.c.app_id)
            .order_by(nt.c.id)
        )
        if where is not None:
            q = q.where(where)
        with self.engine.connect() as c:
            rows = list(c.execute(q))
            ids = [r.id for r in rows]
            counts: dict[tuple[int, str], int] = {}
            for tid, state, n in c.execute(
                select(d.c.target_id, d.c.state, func.count())
                .where(d.c.target_id.in_(ids))
                .group_by(d.c.target_id, d.c.state)
            ):
                counts[(tid, state)] = n
            last: dict[int, tuple[str, float | None]] = {}
            newest = (
                select(d.c.target_id, func.max(d.c.last_at).label("at"))
                .where(d.c.target_id.in_(ids), d.c.last_at.is_not(None))
                .group_by(d.c.target_id)
                .subquery()
            )
            for r in c.execute(
                select(d.c.target_id, d.c.last_error, d.c.last_at).join(
                    newest, and_(newest.c.target_id == d.c.target_id, newest.c.at == d.c.last_at)
                )
            ):
                last[r.target_id] = (r.last_error, r.last_at)
        return [
            TargetRow(
                id=r.id, app=r.name or "", app_id=r.app_id, url=r.url, created_at=r.created_at,
                pending=counts.get((r.id, "pending"), 0),
                delivered=counts.get((r.id, "delivered"), 0),
                failed=counts.get((r.id, "failed"), 0),
                last_error=last.get(r.id, ("", None))[0], last_at=last.get(r.id, ("", None))[1],
            )
            for r in rows
        ]  # fmt: skip

    def remove_notify_target(self, target_id: int) -> bool:
        with self.engine.begin() as c:
            c.execute(
                delete(t.notify_deliveries).where(t.notify_deliveries.c.target_id == target_id)
            )
            gone = c.execute(delete(t.notify_targets).where(t.notify_targets.c.id == target_id))
            return bool(gone.rowcount)

    def notify_event(
        self, kind: str, app: str | int = "", message: str = "", /, **fields: Any
    ) -> int:
        """Raise an alert of `kind` (notify.KINDS) about `app` (its name or
        id; "" for the platform): stored with one pending delivery per target
        listening (the app's and the platform-wide ones), all in one
        transaction; the lease holder sends them (notifier.py). `fields`
        (JSON values) go in the webhook's body and the e-mail (any name,
        "kind" too). Its id."""
        if kind not in KINDS:
            raise ValueError(f"unknown alert kind {kind!r}")
        now = time.time()
        nt = t.notify_targets
        with self.engine.begin() as c:
            if isinstance(app, int):
                name = c.execute(select(t.apps.c.name).where(t.apps.c.id == app)).scalar()
                app = name or ""
            event_id = int(
                c.execute(
                    insert(t.notify_events).values(
                        ts=now, kind=kind, app=app, message=message,
                        fields=json.dumps(fields, sort_keys=True, default=str),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )  # fmt: skip
            listening: ColumnElement[bool] = nt.c.app_id.is_(None)
            if app:
                app_ids = select(t.apps.c.id).where(t.apps.c.name == app).scalar_subquery()
                listening = or_(listening, nt.c.app_id == app_ids)
            targets = [r.id for r in c.execute(select(nt.c.id).where(listening))]
            if targets:
                c.execute(
                    insert(t.notify_deliveries),
                    [
                        {"event_id": event_id, "target_id": tid, "state": "pending",
                         "attempts": 0, "next_at": now, "last_error": ""}
                        for tid in targets
                    ],
                )  # fmt: skip
        return event_id

    def due_deliveries(self, now: float, limit: int = 50) -> list[Due]:
        """Pending deliveries whose next try is due, oldest first."""
        d, e, nt = t.notify_deliveries, t.notify_events, t.notify_targets
        q = (
            select(
                d.c.id,
                d.c.attempts,
                d.c.target_id,
                nt.c.sealed,
                nt.c.trusted,
                e.c.id.label("event_id"),
                e.c.kind,
                e.c.app,
                e.c.message,
                e.c.ts,
                e.c.fields,
            )
            .join(e, e.c.id == d.c.event_id)
            .join(nt, nt.c.id == d.c.target_id)
            .where(d.c.state == "pending", d.c.next_at <= now)
            .order_by(d.c.next_at, d.c.id)
            .limit(limit)
        )
        with self.engine.connect() as c:
            rows = list(c.execute(q))
        box = self._box()
        out = []
        for r in rows:
            opened = box.open(r.sealed)
            alert = Alert(r.event_id, r.kind, r.app, r.message, r.ts, json.loads(r.fields))
            out.append(
                Due(
                    r.id, r.attempts, alert, r.target_id, opened["url"], opened["secret"],
                    bool(r.trusted),
                )
            )  # fmt: skip
        return out

    def record_delivery(self, delivery_id: int, outcome: Outcome) -> None:
        """A try's outcome (notify.after_try)."""
        with self.engine.begin() as c:
            c.execute(
                update(t.notify_deliveries)
                .where(t.notify_deliveries.c.id == delivery_id)
                .values(
                    state=outcome.state, attempts=outcome.attempts, next_at=outcome.next_at,
                    last_at=time.time(), last_error=outcome.last_error[:2000],
                )
            )  # fmt: skip

    def notify_log(self, target_ids: set[int] | None = None, limit: int = 50) -> list[DeliveryRow]:
        """The newest deliveries (of `target_ids`), with their alert."""
        d, e = t.notify_deliveries, t.notify_events
        q = (
            select(d, e.c.kind, e.c.app, e.c.message, e.c.ts)
            .join(e, e.c.id == d.c.event_id)
            .order_by(d.c.id.desc())
            .limit(limit)
        )
        if target_ids is not None:
            q = q.where(d.c.target_id.in_(target_ids))
        with self.engine.connect() as c:
            return [
                DeliveryRow(
                    r.id, r.target_id, r.kind, r.app, r.message, r.ts, r.state, r.attempts,
                    r.next_at, r.last_at, r.last_error,
                )
                for r in c.execute(q)
            ]  # fmt: skip

    def prune_notify(self, before: float) -> int:
        """Forget deliveries that ended before `before`, and alerts left with
        none; pending ones stay, however old. How many alerts went."""
        d, e = t.notify_deliveries, t.notify_events
        with self.engine.begin() as c:
            c.execute(delete(d).where(d.c.state != "pending", d.c.last_at < before))
            orphan = ~select(d.c.id).where(d.c.event_id == e.c.id).exists()
            return int(c.execute(delete(e).where(e.c.ts < before, orphan)).rowcount)
