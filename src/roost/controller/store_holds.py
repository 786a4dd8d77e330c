"""The records of apps suspended for their own restore (migration 0025;
controller/restorehold.py says when they end).

Each change is one transaction with the app's `suspended` flag, so the flag
and its record never disagree: a restore's suspension writes both; its end
resumes the app only while that very record is there and no user has
touched the suspension since (`set_suspended` marks the record `by_user`:
the end then deletes it and leaves the app as the user set it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Engine, delete, insert, select, update

from roost.controller.store_snapshot import bump_desired
from roost.state import tables as t

# What ending a restore's suspension did: the app resumed; the record was a
# user's (left suspended or not, as the user set it); no record.
Released = Literal["resumed", "user", "none"]


@dataclass(frozen=True)
class HoldRow:
    app_id: int
    app: str
    restore_id: str
    since: float  # time.time() when the restore suspended it
    by_user: bool = False  # a user suspended or resumed it since


class HoldStore:
    engine: Engine

    def suspend_for_restore(self, app_id: int, app: str, restore_id: str, since: float) -> bool:
        """The app suspended for restore `restore_id`, recorded as such;
        False (nothing changes) when it was suspended already by anything
        but a restore: that suspension is someone else's, and the restore's
        end leaves it. One an earlier restore of it left (not ended yet)
        passes to this one."""
        a, h = t.apps.c, t.restore_holds.c
        with self.engine.begin() as c:
            row = c.execute(select(a.suspended).where(a.id == app_id)).first()
            if row is None:
                return False
            if row.suspended:
                return bool(
                    c.execute(
                        update(t.restore_holds)
                        .where(h.app_id == app_id, h.app == app, h.by_user.is_(False))
                        .values(restore_id=restore_id, since=since)
                    ).rowcount
                )
            c.execute(update(t.apps).where(a.id == app_id).values(suspended=True))
            c.execute(delete(t.restore_holds).where(h.app_id == app_id))
            c.execute(
                insert(t.restore_holds).values(
                    app_id=app_id, app=app, restore_id=restore_id, since=since, by_user=False
                )
            )
            bump_desired(c)
        return True

    def restore_holds(self) -> list[HoldRow]:
        h = t.restore_holds.c
        with self.engine.connect() as c:
            rows = c.execute(
                select(h.app_id, h.app, h.restore_id, h.since, h.by_user).order_by(h.app_id)
            )
            return [HoldRow(r.app_id, r.app, r.restore_id, r.since, bool(r.by_user)) for r in rows]

    def release_hold(self, app_id: int, app: str, restore_id: str = "") -> Released:
        """The record of the app's suspension for restore `restore_id` (any
        restore's when "") deleted, and the app resumed if the record is
        still there, names it, and no user touched the suspension since."""
        h = t.restore_holds.c
        with self.engine.begin() as c:
            match = select(h.by_user).where(h.app_id == app_id, h.app == app)
            if restore_id:
                match = match.where(h.restore_id == restore_id)
            row = c.execute(match.with_for_update()).first()
            if row is None:
                return "none"
            c.execute(delete(t.restore_holds).where(h.app_id == app_id))
            if row.by_user:
                return "user"
            c.execute(
                update(t.apps)
                .where(t.apps.c.id == app_id, t.apps.c.name == app)
                .values(suspended=False)
            )
            bump_desired(c)
        return "resumed"


def by_user(c: Connection, app_id: int) -> None:
    """A user suspended or resumed the app (inside the caller's
    transaction): no restore's end may undo that."""
    c.execute(
        update(t.restore_holds).where(t.restore_holds.c.app_id == app_id).values(by_user=True)
    )


def forget_holds(c: Connection, app_id: int) -> None:
    """The app deleted (inside the caller's transaction)."""
    c.execute(delete(t.restore_holds).where(t.restore_holds.c.app_id == app_id))
