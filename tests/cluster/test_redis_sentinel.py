"""An app's Redis pair under Sentinel, on namespace hosts (issue 16): the
master's host dies under a writing app; its replica takes over, the app
reconnects and writes on, every write the replica acknowledged (WAIT 1) is
there; the old master, started again as a servicehost starts a copy, comes
back as the new master's replica with the data."""

from __future__ import annotations

import asyncio
import time

from roost.servicehost import redisrepl
from tests.cluster.harness import Network
from tests.cluster.redispair import RedisPair, Writer, redis_bin, until

FAILOVER_WAIT_S = 60.0


async def test_a_dead_masters_replica_takes_over_and_keeps_acknowledged_writes(
    network: Network,
) -> None:
    redis_bin()  # a clear error when Redis is not installed
    pair = RedisPair(
        network, network.add_host("sh1"), network.add_host("sh2"), network.add_host("ctl")
    )
    await pair.start()
    assert await pair.master() == pair.addr(pair.sh1)

    writer = Writer(pair)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(writer.run(stop))
        await until(lambda: _settled(writer.acked, 20), 30, "acknowledged writes before the fault")
        killed_at = time.monotonic()
        await asyncio.to_thread(network.kill_host, pair.sh1)
        new = pair.addr(pair.sh2)

        async def written_on_new() -> bool:
            return writer.first_write_after(killed_at, new) is not None

        await until(written_on_new, FAILOVER_WAIT_S, "a write accepted by the promoted replica")
        stop.set()
    first = writer.first_write_after(killed_at, new)
    assert first is not None
    print(f"redis writes resumed {first - killed_at:.1f} s after the master's host died")
    assert await pair.master() == new

    # Every write the replica acknowledged before the fault is on the new master.
    async with pair.admin(new) as r:
        values = await r.call("MGET", *(f"k{n}" for n in writer.acked))
    lost = [n for n, v in zip(writer.acked, values, strict=True) if v != str(n)]
    assert not lost, f"acknowledged writes lost: {lost[:10]} of {len(writer.acked)}"
    assert writer.acked, "nothing was acknowledged"

    # The old master's host comes back: its copy starts as a servicehost
    # starts one (following whom the sentinels agree on), its sentinel from
    # the file it rewrote, and it rejoins as a replica with everything.
    agreed = await pair.master()
    follow = redisrepl.start_master(agreed, pair.addr(pair.sh1), new, recorded_master=True)
    assert follow == new
    pair.start_sentinel(pair.sh1)
    pair.start_redis(pair.sh1, follow)

    async def rejoined() -> bool:
        try:
            info = await pair.info(pair.addr(pair.sh1), "replication")
        except OSError:
            return False
        view = redisrepl.read_view(info)
        return view.role == "slave" and view.link_up

    await until(rejoined, FAILOVER_WAIT_S, "the old master streaming from the new one")
    async with pair.admin(pair.addr(pair.sh1)) as r:
        last = writer.acked[-1]
        assert await r.call("GET", f"k{last}") == str(last)
    view = redisrepl.read_view(await pair.info(new, "replication"))
    assert view.role == "master"
    assert [x.host for x in view.replicas] == [pair.sh1.ip]


async def _settled(acked: list[int], n: int) -> bool:
    return len(acked) >= n
