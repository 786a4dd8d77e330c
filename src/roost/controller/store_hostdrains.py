"""Drained hosts (controller/hostdrain.py): desired state, so another lease holder goes on."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from roost.controller.store_snapshot import bump_desired
from roost.state import tables as t


@dataclass(frozen=True)
class DrainRow:
    host_id: str
    since: float  # wall clock
    note: str  # what keeps it from ending; "" when nothing does


class HostDrainStore:
    engine: Engine

    def drain_host(self, host_id: str) -> bool:
        """Drain `host_id`; False when it already was (nothing changes)."""
        with self.engine.begin() as c:
            try:
                with c.begin_nested():
                    c.execute(
                        insert(t.host_drains).values(host_id=host_id, since=time.time(), note="")
                    )
            except IntegrityError:
                return False
            bump_desired(c)  # the lease holder reads the drained set with desired state
        return True

    def undrain_host(self, host_id: str) -> bool:
        """End `host_id`'s drain; False when it was not drained."""
        with self.engine.begin() as c:
            gone = c.execute(delete(t.host_drains).where(t.host_drains.c.host_id == host_id))
            if not gone.rowcount:
                return False
            bump_desired(c)
        return True

    def host_drains(self) -> list[DrainRow]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.host_drains).order_by(t.host_drains.c.host_id))
            return [DrainRow(r.host_id, r.since, r.note) for r in rows]

    def note_host_drains(self, notes: dict[str, str]) -> None:
        """The lease holder's notes on drained hosts (rows undrained meanwhile stay gone)."""
        if not notes:
            return
        with self.engine.begin() as c:
            for host_id, note in notes.items():
                c.execute(
                    update(t.host_drains)
                    .where(t.host_drains.c.host_id == host_id)
                    .values(note=note)
                )
