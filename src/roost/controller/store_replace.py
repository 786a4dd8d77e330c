"""The records a servicehost replacement changes (controller/replace.py):
the pair names NEW where it named OLD, the apps' bindings follow, and OLD is
retired (migration 0024: never surveyed, listed or let back)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from roost.controller.store_snapshot import bump_desired
from roost.state import tables as t


@dataclass(frozen=True)
class RetiredRow:
    host: str  # the servicehost id replaced
    address: str  # where its endpoints were (their host)
    replaced_by: str
    retired_at: float


class ReplaceStore:
    engine: Engine

    def replace_pair_member(
        self,
        pair: str,
        old: str,
        new: str,
        new_address: str,
        survivor: str,
        old_address: str = "",
    ) -> bool:
        """In one transaction: pair `pair` names `new` (at `new_address`)
        where it named `old`; bindings held by `old` are held by `survivor`
        (its copy serves now) and those whose standby was `old` have `new`;
        `old` is retired (at `old_address`, its id when "").
        False when the pair does not name `old` (nothing changes: a repeat)."""
        p = t.service_pairs.c
        b = t.service_bindings.c
        with self.engine.begin() as c:
            done = 0
            for host_col, address_col in (
                ("first_host", "first_address"),
                ("second_host", "second_address"),
            ):
                done += c.execute(
                    update(t.service_pairs)
                    .where(p.name == pair, getattr(p, host_col) == old)
                    .values({host_col: new, address_col: new_address})
                ).rowcount
            if not done:
                return False
            c.execute(update(t.service_bindings).where(b.host == old).values(host=survivor))
            c.execute(
                update(t.service_bindings).where(b.standby_host == old).values(standby_host=new)
            )
            try:
                with c.begin_nested():
                    c.execute(
                        insert(t.retired_servicehosts).values(
                            host=old,
                            address=old_address or old,
                            replaced_by=new,
                            retired_at=time.time(),
                        )
                    )
            except IntegrityError:
                pass  # retired before (by another pair it was in)
            # Every controller reads the apps' pairs again (their proxy servers).
            bump_desired(c)
        return True

    def retired_servicehosts(self) -> list[RetiredRow]:
        """The servicehosts replaced for good, by id."""
        with self.engine.connect() as c:
            rows = c.execute(select(t.retired_servicehosts).order_by(t.retired_servicehosts.c.host))
            return [RetiredRow(r.host, r.address, r.replaced_by, r.retired_at) for r in rows]
