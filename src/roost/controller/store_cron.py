"""Cron claims: one row per (app, job, slot), moved along by compare-and-set.

See `roost.controller.cron` for the life of a claim. Taking a claim (a new
one, or adopting a predecessor's) needs the lease: the lease row is read
FOR SHARE in the same transaction, so on PostgreSQL a takeover waits for the
claim to commit and then sees it. Every later change is conditional on the
claim still carrying the writer's token, and writes the run's log lines in
the same transaction, so no line is written twice across a handover.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from roost.controller.cron import FINISHED, STARTED, Claim, ClaimKey, Fence, NewClaim
from roost.state import tables as t

_TAILS = msgspec.msgpack.Decoder(dict[str, bytes])


def _claim(row: Any) -> Claim:
    return Claim(
        app_id=row.app_id,
        job=row.job,
        slot=row.slot,
        fence=row.fence,
        state=row.state,
        status=row.status,
        runner=row.runner,
        session=row.session,
        started_at=row.started_at,
        out_seq=row.out_seq,
        out_tail=_TAILS.decode(row.out_tail) if row.out_tail else {},
        out_lines=row.out_lines,
    )


def _where(key: ClaimKey) -> Any:
    app_id, job, slot = key
    c = t.cron_claims.c
    return (c.app_id == app_id) & (c.job == job) & (c.slot == slot)


def _holds(c: Connection, fence: Fence) -> bool:
    row = c.execute(
        select(t.leases.c.token)
        .where(t.leases.c.name == fence.lease, t.leases.c.holder == fence.holder)
        .with_for_update(read=True)
    ).first()
    return row is not None and row.token == fence.token


def _log(c: Connection, app_id: int, lines: Iterable[tuple[str, str]]) -> None:
    now = time.time()
    rows = [
        {"app_id": app_id, "ts": now, "source": "cron", "process": "cron", "stream": s, "line": ln}
        for s, ln in lines
    ]
    if rows:
        c.execute(insert(t.log_lines), rows)


class CronStore:
    engine: Engine

    def cron_claims(self, since_slot: int) -> list[Claim]:
        """Every open claim, and every claim of a slot from `since_slot` on."""
        c = t.cron_claims.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.cron_claims).where(or_(c.state != FINISHED, c.slot >= since_slot))
            )
            return [_claim(r) for r in rows]

    def claim_cron(self, fence: Fence, new: NewClaim) -> bool:
        """True for the one caller that wins this (app, job, slot), while it holds the lease."""
        try:
            with self.engine.begin() as c:
                if not _holds(c, fence):
                    return False
                c.execute(
                    insert(t.cron_claims).values(
                        app_id=new.job.app_id,
                        job=new.job.key,
                        slot=new.slot,
                        fence=fence.token,
                        claimed_by=fence.holder,
                        claimed_at=time.time(),
                        state=new.state,
                        status=new.status,
                    )
                )
                if new.status:
                    _log(c, new.job.app_id, [("stderr", f"cron: {new.job.command!r} {new.status}")])
        except IntegrityError:
            return False
        return True

    def adopt_cron(self, fence: Fence, claim: Claim, state: str) -> Claim | None:
        """Take `claim` over (as it was read) in `state`; None when it moved meanwhile."""
        c = t.cron_claims.c
        with self.engine.begin() as conn:
            if not _holds(conn, fence):
                return None
            done = conn.execute(
                update(t.cron_claims)
                .where(_where(claim.key), c.fence == claim.fence, c.state == claim.state)
                .values(fence=fence.token, claimed_by=fence.holder, state=state)
            )
            if done.rowcount != 1:
                return None
            row = conn.execute(select(t.cron_claims).where(_where(claim.key))).one()
        return _claim(row)

    def start_cron(self, token: int, claim: Claim, runner: str, session: str, line: str) -> bool:
        """claimed -> started on `runner` as `session`: written before RunStart is sent."""
        c = t.cron_claims.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.cron_claims)
                .where(_where(claim.key), c.fence == token, c.state == claim.state)
                .values(state=STARTED, runner=runner, session=session, started_at=time.time())
            )
            if done.rowcount != 1:
                return False
            _log(conn, claim.app_id, [("stdout", line)])
        return True

    def cron_output(
        self,
        token: int,
        key: ClaimKey,
        seq: int,
        tail: dict[str, bytes],
        count: int,
        lines: list[tuple[str, str]],
    ) -> bool:
        """Log `lines` and note how far the output was taken, as one step."""
        c = t.cron_claims.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.cron_claims)
                .where(_where(key), c.fence == token, c.state == STARTED)
                .values(out_seq=seq, out_tail=msgspec.msgpack.encode(tail), out_lines=count)
            )
            if done.rowcount != 1:
                return False
            _log(conn, key[0], lines)
        return True

    def finish_cron(
        self,
        token: int,
        key: ClaimKey,
        status: str,
        lines: list[tuple[str, str]],
        exit_code: int | None = None,
    ) -> bool:
        c = t.cron_claims.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.cron_claims)
                .where(_where(key), c.fence == token, c.state != FINISHED)
                .values(
                    state=FINISHED,
                    status=status,
                    exit_code=exit_code,
                    finished_at=time.time(),
                    out_tail=None,
                )
            )
            if done.rowcount != 1:
                return False
            _log(conn, key[0], lines)
        return True

    def prune_cron(self, before_slot: int) -> None:
        with self.engine.begin() as c:
            c.execute(delete(t.cron_claims).where(t.cron_claims.c.slot < before_slot))
