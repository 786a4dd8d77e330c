"""The controller's connections to its state database try the primary first.

In a cluster the state database is a Patroni pair reached by a multi-host
URL, and libpq waits its connect_timeout on a first-listed member whose
host died without a reset (roost.state.hostorder says more). Here the
members are asked which is the primary (`patroni.order_members`:
Patroni's `GET /primary` on `rest_port` from cluster.json, every member at
once, 1 s at most; PostgreSQL's port only when Patroni is silent or its
port is not known, 0) and listed in that order:

  - `state_engine`: the controller's engine (the store, the wait for the
    database at start), ordered before each new connection, the order
    kept a second or two (hostorder.PrimaryFirst). SQLAlchemy connects in
    a worker thread (AsyncStore's pool, asyncio.to_thread), never on the
    event loop; the probe runs in a short-lived event loop of that thread.
  - `ordered_url`: one URL in the order found now, for what connects once
    (the Alembic revision, pg_dump, the migration's child process).

SQLite and a single-host URL are used as given: nothing is probed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine

from roost import patroni
from roost.state import hostorder
from roost.state.db import make_engine

T = TypeVar("T")


def _blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`make()`'s coroutine run to its end from synchronous code: in a
    short-lived loop of this thread, or, when a loop already runs here (a
    connection made on it blocks it anyway), of a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1, thread_name_prefix="roost-state-order") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def patroni_order(rest_port: int) -> hostorder.HostOrder:
    """A blocking order of the state database's members: the primary
    first, silent members last (`patroni.order_members`)."""

    def order(hosts: Sequence[str], pg_port: int) -> list[str]:
        return _blocking(lambda: patroni.order_members(hosts, pg_port, rest_port))

    return order


def state_engine(url: str, rest_port: int = 0) -> Engine:
    """`make_engine(url)`, whose new connections list the members the
    primary first (a multi-host PostgreSQL URL; others as they are)."""
    return make_engine(url, order=patroni_order(rest_port))


async def ordered_url(url: str, rest_port: int = 0) -> str:
    """`url` with its members in the order to try them now; `url` itself
    for SQLite or a single host (nothing asked)."""
    m = hostorder.url_members(url)
    if m is None:
        return url
    found = hostorder.arranged(m, await patroni.order_members(m.hosts, m.port, rest_port))
    return url if tuple(found) == m.hosts else hostorder.with_hosts(url, found)
