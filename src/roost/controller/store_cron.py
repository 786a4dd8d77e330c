"""Cron claims: exactly one run per (app, job, minute) across controllers."""

from __future__ import annotations

import time

from sqlalchemy import Engine, delete, insert, update
from sqlalchemy.exc import IntegrityError

from roost.state import tables as t


class CronStore:
    engine: Engine

    def claim_cron(self, app_id: int, job: str, slot: int, holder: str) -> bool:
        """True for the one caller that wins this (app, job, slot)."""
        try:
            with self.engine.begin() as c:
                c.execute(
                    insert(t.cron_claims).values(
                        app_id=app_id,
                        job=job,
                        slot=slot,
                        claimed_by=holder,
                        claimed_at=time.time(),
                        status="claimed",
                    )
                )
        except IntegrityError:
            return False
        return True

    def finish_cron(self, app_id: int, job: str, slot: int, status: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(t.cron_claims)
                .where(
                    t.cron_claims.c.app_id == app_id,
                    t.cron_claims.c.job == job,
                    t.cron_claims.c.slot == slot,
                )
                .values(status=status)
            )

    def prune_cron(self, before_slot: int) -> None:
        with self.engine.begin() as c:
            c.execute(delete(t.cron_claims).where(t.cron_claims.c.slot < before_slot))
