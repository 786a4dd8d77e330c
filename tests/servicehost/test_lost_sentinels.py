"""A servicehost lost for good and replaced is forgotten by its pair's
members: its sentinel no longer counted or asked (pure parts:
pgreplace.replaced, redispairs.live_sentinels, and what a member reports
with them); the whole-pair check asks each live sentinel once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from roost.servicehost import sentinel, sentinelproc
from roost.servicehost.pgpair import PairPlan, for_host, new_pair
from roost.servicehost.pgreplace import replaced
from roost.servicehost.redispairs import PairConfig, RedisPairs, live_sentinels, other_sentinels
from roost.servicehost.state import HostState

ETCD = ["10.0.0.7", "10.0.0.8", "10.0.0.9"]
# Sentinels on three servicehosts (a pair and a spare) and a controller.
BOOK = (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.5", 26379), ("10.0.0.7", 26379))


# A replica streaming, as SENTINEL REPLICAS lists it (the fields read).
REPLICA = {"name": "10.0.0.5:7001", "ip": "10.0.0.5", "port": "7001", "flags": "slave",
           "master-link-status": "ok"}  # fmt: skip


def plan() -> PairPlan:
    return for_host(new_pair("p1", ["10.0.0.1", "10.0.0.2"], ETCD), "10.0.0.2")


def test_a_replacement_records_the_lost_member_and_its_plan_travels_to_new() -> None:
    once = replaced(plan(), "10.0.0.1", "10.0.0.5")
    assert once.hosts == ["10.0.0.5", "10.0.0.2"] and once.lost == ["10.0.0.1"]
    # NEW is given the same record (its plan is the survivor's, for it).
    assert for_host(once, "10.0.0.5").lost == ["10.0.0.1"]
    # A second loss adds to it; a lost host that comes back as a replacement leaves it.
    twice = replaced(once, "10.0.0.2", "10.0.0.6")
    assert twice.lost == ["10.0.0.1", "10.0.0.2"]
    back = replaced(twice, "10.0.0.5", "10.0.0.1")
    assert back.lost == ["10.0.0.2", "10.0.0.5"]
    # A pair's file written before the field existed reads as nothing lost.
    raw = msgspec.json.encode(plan()).replace(b',"lost":[]', b"")
    assert b"lost" not in raw and msgspec.json.decode(raw, type=PairPlan).lost == []


def test_the_lost_hosts_sentinel_is_not_counted() -> None:
    assert live_sentinels(BOOK, ["10.0.0.1"]) == (BOOK[1], BOOK[2], BOOK[3])
    assert live_sentinels(BOOK, []) == BOOK


def pairs_on(p: PairPlan | None) -> RedisPairs:
    host: Any = SimpleNamespace(pg_pair=p, state=HostState())
    return RedisPairs(host, PairConfig(BOOK, "pw", 26379))


def test_a_member_counts_the_sentinels_of_its_pair_as_replaced() -> None:
    # After the replacement and the sentinels' reset, each knows the two
    # other live ones: three watch the master.
    fields = sentinel.MasterSeen({"num-slaves": "1", "num-other-sentinels": "2"}, (REPLICA,))
    before = pairs_on(plan())
    assert sentinel.failover_problem(fields, len(before.sentinels)) == (
        "only 3 of 4 sentinels watch it"
    )
    after = pairs_on(replaced(plan(), "10.0.0.1", "10.0.0.5"))
    assert after.sentinels == (BOOK[1], BOOK[2], BOOK[3])
    assert sentinel.failover_problem(fields, len(after.sentinels)) == ""
    # Redis paired without a PostgreSQL pair: the whole book.
    assert pairs_on(None).sentinels == BOOK


def test_the_whole_pair_check_asks_the_other_sentinels_by_address() -> None:
    # 10.0.0.2's own sentinel is asked on loopback; by its address, only the others.
    own = {"10.0.0.2", "127.0.0.1"}
    assert other_sentinels(BOOK, own) == (BOOK[0], BOOK[2], BOOK[3])
    # An address book that names this host otherwise: every one is asked.
    assert other_sentinels(BOOK, {"10.0.0.9", "127.0.0.1"}) == BOOK


class Sentinels:
    """Each address's SENTINEL MASTER fields and SENTINEL REPLICAS entries;
    records every address asked."""

    def __init__(self, views: dict[str, sentinel.MasterSeen]) -> None:
        self.views = views
        self.asked: list[tuple[str, int]] = []

    def client(self, addr: tuple[str, int], password: str) -> Sentinels.Client:
        self.asked.append(addr)
        return Sentinels.Client(self.views[addr[0]])

    class Client:
        def __init__(self, view: sentinel.MasterSeen) -> None:
            self.view = view

        async def __aenter__(self) -> Sentinels.Client:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def call(self, *args: str) -> list[Any]:
            flat = lambda d: [x for kv in d.items() for x in kv]  # noqa: E731
            if args[:2] == ("SENTINEL", "MASTER"):
                return flat(self.view.fields)
            assert args[:2] == ("SENTINEL", "REPLICAS"), args
            return [flat(r) for r in self.view.replicas]


def test_one_pass_asks_this_hosts_sentinel_once(monkeypatch: pytest.MonkeyPatch) -> None:
    ready = sentinel.MasterSeen({"num-slaves": "1", "num-other-sentinels": "3"}, (REPLICA,))
    fresh = sentinel.MasterSeen({"num-slaves": "0", "num-other-sentinels": "3"})
    fake = Sentinels({"127.0.0.1": ready, "10.0.0.2": ready, "10.0.0.5": fresh} | {
        h: ready for h in ("10.0.0.1", "10.0.0.7")
    })  # fmt: skip
    monkeypatch.setattr(sentinelproc, "client", fake.client)
    host: Any = SimpleNamespace(
        pg_pair=plan(), state=HostState(), host="10.0.0.2", listen=["127.0.0.1", "10.0.0.2"]
    )
    pairs = RedisPairs(host, PairConfig(BOOK, "pw", 26379))

    async def one_pass() -> str:
        own, why = await pairs._own_view("blog")
        assert own == ready and why == ""
        return await pairs._failover_problem("blog", own)

    problem = asyncio.run(one_pass())
    assert problem == (
        "the sentinels know no replica of it yet: it cannot fail over (the sentinel on 10.0.0.5)"
    )
    assert sorted(fake.asked) == sorted([("127.0.0.1", 26379), BOOK[0], BOOK[2], BOOK[3]])
