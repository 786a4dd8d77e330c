"""The records a servicehost replacement changes (controller/replace.py):
the pair names NEW where it named OLD, and the apps' bindings follow."""

from __future__ import annotations

from sqlalchemy import Engine, update

from roost.controller.store_snapshot import bump_desired
from roost.state import tables as t


class ReplaceStore:
    engine: Engine

    def replace_pair_member(
        self, pair: str, old: str, new: str, new_address: str, survivor: str
    ) -> bool:
        """In one transaction: pair `pair` names `new` (at `new_address`)
        where it named `old`; bindings held by `old` are held by `survivor`
        (its copy serves now) and those whose standby was `old` have `new`.
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
            # Every controller reads the apps' pairs again (their proxy servers).
            bump_desired(c)
        return True
