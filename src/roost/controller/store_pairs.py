"""Servicehost pairs and the pair each app's services live on (migration 0021).

A pair's rows say what it is made of (its two servicehosts, where their
Patroni answers, the runners' proxy port for it); which member is the
primary is never stored: Patroni says, at each request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from roost.state import tables as t


@dataclass(frozen=True)
class PairRow:
    name: str
    hosts: tuple[str, str]  # servicehost ids
    addresses: tuple[str, str]  # where each one's Patroni and PostgreSQL answer
    pg_port: int
    rest_port: int
    proxy_port: int

    def host_at(self, address: str) -> str:
        """The servicehost id of the member at `address` ("" if neither)."""
        return next(
            (h for h, a in zip(self.hosts, self.addresses, strict=True) if a == address), ""
        )


class PairStore:
    engine: Engine

    def add_service_pair(self, pair: PairRow) -> bool:
        """Record a pair; False when one of that name exists (nothing changes)."""
        with self.engine.begin() as c:
            try:
                with c.begin_nested():
                    c.execute(
                        insert(t.service_pairs).values(
                            name=pair.name,
                            first_host=pair.hosts[0],
                            second_host=pair.hosts[1],
                            first_address=pair.addresses[0],
                            second_address=pair.addresses[1],
                            pg_port=pair.pg_port,
                            rest_port=pair.rest_port,
                            proxy_port=pair.proxy_port,
                            created_at=time.time(),
                        )
                    )
            except IntegrityError:
                return False
        return True

    def service_pairs(self) -> list[PairRow]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.service_pairs).order_by(t.service_pairs.c.name))
            return [
                PairRow(
                    r.name,
                    (r.first_host, r.second_host),
                    (r.first_address, r.second_address),
                    r.pg_port,
                    r.rest_port,
                    r.proxy_port,
                )
                for r in rows
            ]

    def app_pair(self, app_id: int) -> str:
        """The pair holding the app's services ("" when none is recorded)."""
        with self.engine.connect() as c:
            found = c.execute(
                select(t.app_pairs.c.pair).where(t.app_pairs.c.app_id == app_id)
            ).scalar()
            return str(found or "")

    def app_pair_map(self, app_ids: list[int] | None = None) -> dict[int, str]:
        """App id -> the pair holding its services, for those placed on one
        (of `app_ids`; every app's when None)."""
        q = select(t.app_pairs.c.app_id, t.app_pairs.c.pair)
        if app_ids is not None:
            q = q.where(t.app_pairs.c.app_id.in_(app_ids))
        with self.engine.connect() as c:
            return {int(a): str(p) for a, p in c.execute(q)}

    def set_app_pair(self, app_id: int, pair: str) -> str:
        """Record the app's pair unless one is already: the pair it is on
        (another controller's choice, made first, wins)."""
        with self.engine.begin() as c:
            try:
                with c.begin_nested():
                    c.execute(
                        insert(t.app_pairs).values(app_id=app_id, pair=pair, placed_at=time.time())
                    )
                return pair
            except IntegrityError:
                found = c.execute(
                    select(t.app_pairs.c.pair).where(t.app_pairs.c.app_id == app_id)
                ).scalar()
                if found is None:
                    raise  # not a second placement: no such pair (or app)
                return str(found)

    def pair_loads(self) -> dict[str, int]:
        """Pair name -> how many apps it holds."""
        with self.engine.connect() as c:
            rows = c.execute(select(t.app_pairs.c.pair, func.count()).group_by(t.app_pairs.c.pair))
            return {str(pair): int(n) for pair, n in rows}
