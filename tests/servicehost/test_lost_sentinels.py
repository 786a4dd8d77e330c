"""A servicehost lost for good and replaced is forgotten by its pair's
members: its sentinel no longer counted or asked (pure parts:
pgreplace.replaced, redispairs.live_sentinels, and what a member reports
with them)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec

from roost.servicehost import sentinel
from roost.servicehost.pgpair import PairPlan, for_host, new_pair
from roost.servicehost.pgreplace import replaced
from roost.servicehost.redispairs import PairConfig, RedisPairs, live_sentinels
from roost.servicehost.state import HostState

ETCD = ["10.0.0.7", "10.0.0.8", "10.0.0.9"]
# Sentinels on three servicehosts (a pair and a spare) and a controller.
BOOK = (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.5", 26379), ("10.0.0.7", 26379))


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
    fields = {"num-slaves": "1", "num-other-sentinels": "2"}
    before = pairs_on(plan())
    assert sentinel.failover_problem(fields, len(before.sentinels)) == (
        "only 3 of 4 sentinels watch it"
    )
    after = pairs_on(replaced(plan(), "10.0.0.1", "10.0.0.5"))
    assert after.sentinels == (BOOK[1], BOOK[2], BOOK[3])
    assert sentinel.failover_problem(fields, len(after.sentinels)) == ""
    # Redis paired without a PostgreSQL pair: the whole book.
    assert pairs_on(None).sentinels == BOOK
