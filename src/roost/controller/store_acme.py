"""Certificates by ACME: order states, pending HTTP-01 answers, the account key.

The decisions are acme_plan's; this is their storage. Challenges count as
desired state (`bump_desired`): they ride in the route table to every router.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from roost.controller.acme_plan import Order
from roost.controller.secretbox import SecretBox
from roost.controller.store_access import NotFound
from roost.controller.store_snapshot import bump_desired
from roost.state import tables as t


@dataclass(frozen=True)
class Challenge:
    token: str
    hostname: str
    app_id: int
    key_authorization: str


def _order(r: Any) -> Order:
    return Order(
        hostname=r.hostname, app_id=r.app_id, state=r.state, next_at=r.next_at,
        reason=r.reason, detail=r.detail, failures=r.failures,
    )  # fmt: skip


class AcmeStore:
    engine: Engine
    secrets: SecretBox | None

    def acme_orders(self, app_id: int | None = None) -> list[Order]:
        q = select(t.acme_orders).order_by(t.acme_orders.c.hostname)
        if app_id is not None:
            q = q.where(t.acme_orders.c.app_id == app_id)
        with self.engine.connect() as c:
            return [_order(r) for r in c.execute(q)]

    def acme_save_orders(self, orders: list[Order]) -> None:
        """Write these rows (insert or replace), one transaction."""
        now = time.time()
        with self.engine.begin() as c:
            for o in orders:
                values = {
                    "app_id": o.app_id, "state": o.state, "reason": o.reason,
                    "detail": o.detail, "failures": o.failures, "next_at": o.next_at,
                    "updated_at": now,
                }  # fmt: skip
                r = c.execute(
                    update(t.acme_orders)
                    .where(t.acme_orders.c.hostname == o.hostname)
                    .values(**values)
                )
                if r.rowcount == 0:
                    c.execute(insert(t.acme_orders).values(hostname=o.hostname, **values))

    def acme_drop_orders(self, hostnames: list[str]) -> None:
        if not hostnames:
            return
        with self.engine.begin() as c:
            c.execute(delete(t.acme_orders).where(t.acme_orders.c.hostname.in_(hostnames)))

    def acme_renew_now(self, app_id: int, hostname: str, now: float) -> None:
        """An operator's `roost certs renew`: the domain's order is due at once."""
        with self.engine.begin() as c:
            r = c.execute(
                update(t.acme_orders)
                .where(t.acme_orders.c.hostname == hostname, t.acme_orders.c.app_id == app_id)
                .values(next_at=now, updated_at=now)
            )
        if r.rowcount == 0:
            raise NotFound(f"{hostname} has no certificate managed by ACME")

    def acme_publish(self, challenges: list[Challenge]) -> None:
        with self.engine.begin() as c:
            for ch in challenges:
                c.execute(delete(t.acme_challenges).where(t.acme_challenges.c.token == ch.token))
                c.execute(
                    insert(t.acme_challenges).values(
                        token=ch.token, hostname=ch.hostname, app_id=ch.app_id,
                        key_authorization=ch.key_authorization, created_at=time.time(),
                    )
                )  # fmt: skip
            bump_desired(c)

    def acme_withdraw(self, tokens: list[str], older_than: float | None = None) -> None:
        """Stop publishing these answers (and any published before `older_than`:
        what a controller that died mid-order left behind)."""
        with self.engine.begin() as c:
            cond: list[ColumnElement[bool]] = [t.acme_challenges.c.token.in_(tokens)]
            if older_than is not None:
                cond.append(t.acme_challenges.c.created_at < older_than)
            r = c.execute(delete(t.acme_challenges).where(or_(*cond)))
            if r.rowcount:
                bump_desired(c)

    def acme_challenges(self) -> list[Challenge]:
        q = select(t.acme_challenges).order_by(t.acme_challenges.c.token)
        with self.engine.connect() as c:
            return [
                Challenge(r.token, r.hostname, r.app_id, r.key_authorization) for r in c.execute(q)
            ]

    def acme_account_key(self, directory: str, new_key_pem: str) -> str:
        """The platform's account key (PEM) at `directory`; `new_key_pem` becomes
        it when there is none yet (the first writer wins among controllers)."""
        box = self.secrets
        if box is None:
            raise RuntimeError(
                "this store has no secrets key: an account key is never stored clear"
            )
        q = select(t.acme_accounts.c.key_sealed).where(t.acme_accounts.c.directory == directory)
        with self.engine.connect() as c:
            sealed = c.execute(q).scalar()
        if sealed is None:
            try:
                with self.engine.begin() as c:
                    c.execute(
                        insert(t.acme_accounts).values(
                            directory=directory, key_sealed=box.seal(new_key_pem),
                            uri="", created_at=time.time(),
                        )
                    )  # fmt: skip
                return new_key_pem
            except IntegrityError:
                with self.engine.connect() as c:
                    sealed = c.execute(q).scalar_one()
        key = box.open(sealed)
        if not isinstance(key, str):
            raise RuntimeError("the stored ACME account key is not PEM text")
        return key
