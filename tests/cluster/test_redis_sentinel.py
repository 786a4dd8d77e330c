"""An app's Redis pair under Sentinel, on namespace hosts (issue 16): the
master's host dies under an app writing through the runner-local data
proxy; its replica takes over, the app reconnects through the same address
and writes on, every write the replica acknowledged (WAIT 1) is there; the
old master, started again as a servicehost starts a copy, comes back as the
new master's replica with the data."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from roost.servicehost import redisrepl
from tests.cluster.harness import Network
from tests.cluster.redispair import (
    RedisPair,
    failover_through_proxy,
    redis_bin,
    until,
)

FAILOVER_WAIT_S = 60.0


async def test_a_dead_masters_replica_takes_over_and_keeps_acknowledged_writes(
    network: Network, tmp_path: Path
) -> None:
    redis_bin()  # a clear error when Redis is not installed
    pair = RedisPair(
        network, network.add_host("sh1"), network.add_host("sh2"), network.add_host("ctl")
    )
    await pair.start()
    assert await pair.master() == pair.addr(pair.sh1)
    failover = await failover_through_proxy(pair, tmp_path / "proxy")
    print(f"redis writes resumed {failover.unavailable_s:.1f} s after the master's host died")
    assert failover.acked
    assert not failover.lost, f"acknowledged writes lost: {failover.lost[:10]}"

    # The old master's host comes back: its copy starts as a servicehost
    # starts one (following whom the sentinels agree on), its sentinel from
    # the file it rewrote, and it rejoins as a replica with everything.
    new = pair.addr(pair.sh2)
    follow = redisrepl.start_master(await pair.master(), pair.addr(pair.sh1), new, True)
    assert follow == new
    pair.start_sentinel(pair.sh1)
    pair.start_redis(pair.sh1, follow)

    await until(partial(pair.rejoined, pair.sh1), FAILOVER_WAIT_S, "the old master streaming")
    last = failover.acked[-1]
    async with pair.admin(pair.addr(pair.sh1)) as r:
        assert await r.call("GET", f"k{last}") == str(last)
    view = redisrepl.read_view(await pair.info(new, "replication"))
    assert view.role == "master"
    assert [x.host for x in view.replicas] == [pair.sh1.ip]
