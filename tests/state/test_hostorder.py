"""The order a controller's new connections try the state database's
members in (roost.state.hostorder), decided without sockets: which URLs
have members to order, what is kept and for how long on a fake clock, one
asking for a burst of threads, and an order that fails or drops a host."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from sqlalchemy import make_url

from roost.state import hostorder
from roost.state.db import make_engine
from roost.state.hostorder import Kept, Members, PrimaryFirst, members, url_members, with_hosts

URL = (
    "postgresql+psycopg://roost:p%40ss@/roost"
    "?host=10.0.0.1,10.0.0.2&port=5433,5433&target_session_attrs=read-write"
)
AB = Members(("10.0.0.1", "10.0.0.2"), 5433)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"host": "a,b", "port": "5433,5433"}, Members(("a", "b"), 5433)),
        ({"host": "a,b", "port": 5433}, Members(("a", "b"), 5433)),
        ({"host": "a,b,c", "port": "6000"}, Members(("a", "b", "c"), 6000)),
        ({"host": "a,b"}, Members(("a", "b"), 5432)),
        ({"host": "a", "port": 5433}, None),  # one host: nothing to order
        ({"host": "a,a", "port": "1,2"}, None),  # one host twice
        ({"host": "a,b", "port": "5433,5434"}, None),  # ports differ
        ({"host": "a,b", "port": "5433,5433,5433"}, None),
        ({"host": "/run/pg,b", "port": "5433"}, None),  # a socket directory
        ({"host": "a,b", "hostaddr": "10.0.0.1,10.0.0.2"}, None),
        ({"host": ("a:1", "b:1")}, None),  # not libpq's list
        ({}, None),
    ],
)
def test_which_connections_have_members_to_order(params: dict, expected: Members | None) -> None:
    assert members(params) == expected


def test_urls() -> None:
    assert url_members(URL) == AB
    assert url_members("sqlite:////tmp/state.db") is None
    assert url_members("postgresql+psycopg://roost@10.0.0.1:5433/roost") is None
    swapped = make_url(with_hosts(URL, ["10.0.0.2", "10.0.0.1"]))
    assert swapped.query["host"] == "10.0.0.2,10.0.0.1"
    assert swapped.query["port"] == "5433,5433"
    assert swapped.query["target_session_attrs"] == "read-write"
    assert swapped.password == "p@ss" and swapped.database == "roost"


def test_an_order_never_drops_or_adds_a_host() -> None:
    assert hostorder.arranged(AB, ["10.0.0.2", "10.0.0.1"]) == ["10.0.0.2", "10.0.0.1"]
    assert hostorder.arranged(AB, ["10.0.0.2"]) == ["10.0.0.1", "10.0.0.2"]
    assert hostorder.arranged(AB, ["10.0.0.2", "10.0.0.1", "x"]) == ["10.0.0.1", "10.0.0.2"]


def test_kept_for_a_while_from_when_it_was_asked() -> None:
    kept = Kept(keep_s=2.0)
    assert kept.fresh(AB, 0.0) is None
    kept.keep(AB, ["10.0.0.2", "10.0.0.1"], asked_at=100.0)
    assert kept.fresh(AB, 100.0) == ["10.0.0.2", "10.0.0.1"]
    assert kept.fresh(AB, 101.9) == ["10.0.0.2", "10.0.0.1"]
    assert kept.fresh(AB, 102.0) is None  # a failover may have changed it
    assert kept.fresh(AB, 99.0) is None  # a clock that went back: ask again
    assert kept.fresh(Members(("10.0.0.1", "10.0.0.3"), 5433), 100.5) is None  # other members
    kept.forget()
    assert kept.fresh(AB, 100.5) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Order:
    """A fake order: the primary is whoever `primary` names; counts asks."""

    def __init__(self, primary: str) -> None:
        self.primary = primary
        self.asked: list[tuple[tuple[str, ...], int]] = []

    def __call__(self, hosts: Sequence[str], port: int) -> list[str]:
        self.asked.append((tuple(hosts), port))
        return sorted(hosts, key=lambda h: h != self.primary)


def test_a_burst_asks_once_and_an_old_order_is_asked_again() -> None:
    clock, order = Clock(), Order("10.0.0.2")
    first = PrimaryFirst(order, clock, keep_s=2.0)
    for _ in range(5):
        assert first.hosts(AB) == ["10.0.0.2", "10.0.0.1"]
    assert order.asked == [(AB.hosts, 5433)] and first.asked == 1
    clock.now += 1.9
    first.hosts(AB)
    assert first.asked == 1
    order.primary = "10.0.0.1"  # a failover
    clock.now += 0.1
    assert first.hosts(AB) == ["10.0.0.1", "10.0.0.2"] and first.asked == 2


def test_a_failed_connection_or_a_dead_one_forgets_the_order() -> None:
    clock, order = Clock(), Order("10.0.0.2")
    first = PrimaryFirst(order, clock)
    first.hosts(AB)
    first.forget()
    first.hosts(AB)
    assert first.asked == 2


def test_an_order_that_fails_leaves_the_urls_order_and_keeps_nothing() -> None:
    calls = []

    def broken(hosts: Sequence[str], port: int) -> list[str]:
        calls.append(1)
        raise OSError("no loop")

    first = PrimaryFirst(broken, Clock())
    assert first.hosts(AB) == list(AB.hosts)
    assert first.hosts(AB) == list(AB.hosts)
    assert len(calls) == 2


def test_threads_connecting_together_wait_for_one_asking() -> None:
    release = threading.Event()
    order = Order("10.0.0.2")

    def slow(hosts: Sequence[str], port: int) -> list[str]:
        release.wait(5)
        return order(hosts, port)

    first = PrimaryFirst(slow)
    got: list[list[str]] = []
    threads = [threading.Thread(target=lambda: got.append(first.hosts(AB))) for _ in range(4)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(5)
    assert got == [["10.0.0.2", "10.0.0.1"]] * 4
    assert len(order.asked) == 1


def test_nothing_is_installed_for_sqlite_or_one_host(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def never(hosts: Sequence[str], port: int) -> list[str]:
        raise AssertionError("asked")

    for url in (f"sqlite:///{tmp_path}/s.db", "postgresql+psycopg://roost@10.0.0.1:5433/roost"):
        engine = make_engine(url, order=never)
        assert not hostorder.installed(engine), url
        engine.dispose()
    engine = make_engine(URL, order=never)
    assert hostorder.installed(engine)
    assert engine.pool._pre_ping  # type: ignore[attr-defined]
    engine.dispose()
