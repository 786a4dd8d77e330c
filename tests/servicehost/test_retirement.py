"""Servicehosts replaced for good, as a servicehost learns of them
(servicehost/retirement.py): the sentinels it asks, the masters it resets,
and a replaced one that comes back stopping what it ran of its pair. Pure
parts as data; the adapter over stand-ins (no sockets)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from roost.servicehost import retirement
from roost.servicehost.redispairs import Health, PairConfig, RedisPairs
from roost.servicehost.state import HostState
from roost.wire.messages import RetiredHosts

BOOK = (("10.0.0.1", 26379), ("10.0.0.3", 26379), ("10.0.0.4", 26379), ("10.0.0.7", 26379))


def test_learning_keeps_every_retired_address_and_names_the_new_ones() -> None:
    assert retirement.learn([], ["10.0.0.1"]) == (["10.0.0.1"], ["10.0.0.1"])
    assert retirement.learn(["10.0.0.1"], ["10.0.0.1"]) == (["10.0.0.1"], [])
    # An answer that misses one (a controller not caught up yet) forgets nothing.
    assert retirement.learn(["10.0.0.1"], ["10.0.0.2"]) == (["10.0.0.1", "10.0.0.2"], ["10.0.0.2"])


class Stoppable:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    async def stop(self) -> None:
        self.log.append(self.name)


class FakePairs(RedisPairs):
    def __init__(self, host: Any, done: list[str]) -> None:
        super().__init__(host, PairConfig(BOOK, "pw", 26379))
        self.done = done

    async def reset(self, app: str) -> None:
        self.done.append(f"reset {app} on {len(self.sentinels)} sentinels")


def host_of(done: list[str]) -> Any:
    host: Any = SimpleNamespace(state=HostState(), pg_pair=None, saved=0, pair_sup=None, redis={})
    host.save = lambda: setattr(host, "saved", host.saved + 1)
    host.pairs = FakePairs(host, done)
    return host


def test_another_pairs_member_stops_asking_the_retired_sentinel_and_resets_its_masters() -> None:
    done: list[str] = []
    host = host_of(done)
    host.pairs.health = {
        "blog": Health("master", "10.0.0.4:7001", 0, ""),
        "shop": Health("replica", "10.0.0.4:7002", 0, ""),
    }
    assert len(host.pairs.sentinels) == 4
    asyncio.run(retirement.told(host, RetiredHosts(addresses=["10.0.0.1"])))
    assert host.state.retired == ["10.0.0.1"] and host.saved == 1
    assert host.pairs.sentinels == BOOK[1:], "the retired host's sentinel is not asked"
    assert done == ["reset blog on 3 sentinels"], "only the masters it holds, once"
    asyncio.run(retirement.told(host, RetiredHosts(addresses=["10.0.0.1"])))
    assert done == ["reset blog on 3 sentinels"] and host.saved == 1, "nothing new: nothing done"


def test_the_replaced_one_told_so_stops_what_it_ran_of_its_pair() -> None:
    done: list[str] = []
    host = host_of(done)
    host.pair_sup = Stoppable(done, "patroni")
    host.pairs.sentinel = Stoppable(done, "sentinel")
    host.redis = {"blog": None, "shop": None}
    # Its copies were masters when it went away: it resets none of them.
    host.pairs.health = {"blog": Health("master", "", 0, ""), "shop": Health("master", "", 0, "")}

    async def stop_redis(app: str) -> None:
        done.append(f"redis {app}")
        host.redis.pop(app)

    host.stop_redis = stop_redis
    told = RetiredHosts(addresses=["10.0.0.1"], replaced_by="10.0.0.5")
    asyncio.run(retirement.told(host, told))
    assert host.state.replaced_by == "10.0.0.5" and host.state.retired == ["10.0.0.1"]
    assert done == ["patroni", "redis blog", "redis shop", "sentinel"], "no reset by it"
    assert host.pair_sup is None and host.pairs.sentinel is None
    done.clear()
    asyncio.run(retirement.told(host, told))
    assert done == [], "told again: nothing more"
