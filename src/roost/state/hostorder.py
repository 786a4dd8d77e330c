"""The state database's members in the order a new connection tries them.

A cluster's controllers reach their state database by a multi-host URL
(`?host=A,B&port=P,P&target_session_attrs=read-write`,
statedb.plan.state_url). libpq tries the hosts in the order listed and
waits its whole connect_timeout (5 s, db.PG_CONNECT_ARGS) on one whose
host is down without a reset (a power cut, a partition: packets dropped)
before it tries the next; with the primary's host dead and listed first,
every new connection of every controller waited those 5 s. An engine made
with an `order` (db.make_engine; the controller's asks Patroni which member
is the primary, controller/stateorder.py) lists the members as that order
says before each new connection (SQLAlchemy's `do_connect`): an order,
never a filter, so libpq still falls through to the next member.

What an order found is kept KEEP_S, so a burst of new pool connections
asks once (the others wait for its answer), and forgotten sooner when a
connection fails or the pool finds one dead: a failover may be under way.
An engine of SQLite or of a single-host URL has none of this.

Pure: `members` (which hosts a connection tries, when an order applies),
`Kept` (what is kept, on a clock given), `with_hosts` (a URL listing them
in another order). `PrimaryFirst` and `install` are the thin part: a lock,
the clock, SQLAlchemy's events.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, event, make_url

log = logging.getLogger("roost.state")

# The members, given in the URL's order and their one PostgreSQL port, in
# the order to try them (blocking; the primary first).
HostOrder = Callable[[Sequence[str], int], list[str]]

# How long an order found is used for new connections. Well under what a
# failover takes to change it (Patroni's leader key ttl 15 s), and long
# enough that a burst of new connections asks once.
KEEP_S = 2.0

DEFAULT_PORT = 5432


@dataclasses.dataclass(frozen=True)
class Members:
    """The hosts a connection tries, in the URL's order, on one port."""

    hosts: tuple[str, ...]
    port: int


def members(params: Mapping[str, Any]) -> Members | None:
    """The members libpq's connection parameters (`params`: SQLAlchemy's
    cparams, or a URL's query) name, when an order applies to them: two
    hosts or more, TCP addresses, each once, one port for all (a port
    list of the same port, or one port). None otherwise (a single host, a
    Unix socket directory, `hostaddr` given, ports that differ): the
    connection is made as the URL says."""
    host = params.get("host")
    if not isinstance(host, str) or "hostaddr" in params:
        return None
    hosts = tuple(h.strip() for h in host.split(","))
    if len(hosts) < 2 or len(set(hosts)) != len(hosts):
        return None
    if any(not h or h.startswith("/") or h.startswith("@") for h in hosts):
        return None
    port = params.get("port")
    ports = [p.strip() for p in str(port).split(",")] if port not in (None, "") else []
    if ports and (len(ports) not in (1, len(hosts)) or len(set(ports)) != 1):
        return None
    if ports and not ports[0].isdigit():
        return None
    return Members(hosts, int(ports[0]) if ports else DEFAULT_PORT)


def url_members(url: str) -> Members | None:
    """`members` of a SQLAlchemy URL (None for SQLite, a single host...)."""
    if not url.startswith("postgresql"):
        return None
    return members(make_url(url).query)


def with_hosts(url: str, hosts: Sequence[str]) -> str:
    """`url` with its `host` list in the order `hosts` gives (the same
    hosts; its ports are one port, so they stay as they are)."""
    u = make_url(url)
    return u.update_query_dict({"host": ",".join(hosts)}).render_as_string(hide_password=False)


def arranged(given: Members, found: Sequence[str]) -> list[str]:
    """`found` when it lists exactly the members given (in any order),
    else the URL's own order: an order never drops or adds a host."""
    return list(found) if sorted(found) == sorted(given.hosts) else list(given.hosts)


@dataclasses.dataclass
class Kept:
    """The last order found, for which members and since when (pure: the
    time is given to each call)."""

    keep_s: float = KEEP_S
    of: Members | None = None
    order: tuple[str, ...] = ()
    at: float = 0.0

    def fresh(self, m: Members, now: float) -> list[str] | None:
        """The order kept for `m`, when asked for less than keep_s ago."""
        if self.of != m or not self.at <= now < self.at + self.keep_s:
            return None
        return list(self.order)

    def keep(self, m: Members, order: Sequence[str], asked_at: float) -> None:
        """What an order asked at `asked_at` found (its age counts from the asking)."""
        self.of, self.order, self.at = m, tuple(order), asked_at

    def forget(self) -> None:
        self.of = None


class PrimaryFirst:
    """An engine's members in `order`'s order, kept a while (`Kept`); one
    thread asks at a time, and the others take its answer."""

    def __init__(
        self,
        order: HostOrder,
        clock: Callable[[], float] = time.monotonic,
        keep_s: float = KEEP_S,
    ) -> None:
        self._order = order
        self._clock = clock
        self._kept = Kept(keep_s)
        self._lock = threading.Lock()
        self.asked = 0  # how many times `order` was asked (tests, logs)

    def hosts(self, m: Members) -> list[str]:
        """`m`'s hosts, the primary first as last found (blocking: up to the
        order's own bound while it asks)."""
        if (kept := self._kept.fresh(m, self._clock())) is not None:
            return kept
        with self._lock:
            asked_at = self._clock()
            if (kept := self._kept.fresh(m, asked_at)) is not None:
                return kept  # another thread asked meanwhile
            self.asked += 1
            try:
                found = arranged(m, self._order(m.hosts, m.port))
            except Exception as exc:  # never fail a connection for its order
                log.warning("state database: the members' order is not known: %s", exc)
                return list(m.hosts)
            self._kept.keep(m, found, asked_at)
            return found

    def forget(self) -> None:
        """The next connection asks again (one failed, or the pool found one dead)."""
        with self._lock:
            self._kept.forget()


def install(engine: Engine, first: PrimaryFirst) -> bool:
    """Each new connection of `engine` lists its members as `first` says;
    False (nothing installed) when its URL names no members to order."""
    if members(engine.dialect.create_connect_args(engine.url)[1]) is None:
        return False

    @event.listens_for(engine, "do_connect")
    def _primary_first(dialect, _record, cargs, cparams):  # type: ignore[no-untyped-def]
        m = members(cparams)
        if m is None:
            return None
        cparams["host"] = ",".join(first.hosts(m))
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception:
            first.forget()
            raise

    @event.listens_for(engine, "invalidate")
    def _dead(*_args):  # type: ignore[no-untyped-def]
        first.forget()

    return True


def installed(engine: Engine) -> bool:
    """Whether `engine`'s new connections are ordered (`install`)."""
    return bool(engine.dialect.dispatch.do_connect)
