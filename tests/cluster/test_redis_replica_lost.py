"""Issue 16 through the whole platform: an app's Redis replica whose host
dies is a platform event, and `roost services info` says the replica is
gone, well before its master notices.

Namespace hosts (tests/cluster/paircluster): a controller, a runner, a
router and the two servicehosts `cluster init` pairs, real Redis copies and
Sentinels (one on each servicehost, one on the controller's host). The
Redis replica's servicehost is powered off (its network silenced, then its
processes killed, so no connection is closed). Its master lists it as an
online replica until its repl-timeout (60 s), with no lag while nothing is
written, and SENTINEL MASTER's num-slaves counts it all along; the
sentinels hold it down (s_down) 3 s after its last answer. The master's
servicehost judges the pair by SENTINEL REPLICAS' flags, so within
`SAID_WITHIN_S` the lease holder has raised a `redis-replication` event
naming the lost replica, and the API's view of the app's Redis (what `roost
services info APP redis` prints) has the master, no replica, and the same
problem. Reading num-slaves, neither said anything for a minute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from roost.servicehost.sentinel import master_name
from tests.cluster.cluster import wait_for
from tests.cluster.paircluster import APP, PairCluster, pair_cluster, redis_info, redis_whole

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

SENTINEL_PORT = 26379
# The sentinels hold a silent replica down after 3 s (sentinel.DOWN_AFTER_MS);
# the master's servicehost looks every 5 s and pushes every 5 s, and the
# lease holder raises the event from the push. 40 s leaves room for a loaded
# machine and stays clear of the master's repl-timeout (60 s), after which
# the master itself says it has no replica.
SAID_WITHIN_S = 40


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[PairCluster]:
    with pair_cluster("roost-redis-replica-lost-") as c:
        yield c


def redis_master(rc: PairCluster) -> str:
    """The app's Redis master's address, as the controller host's sentinel names it."""
    host = rc.controllers[0]
    password = (host.data / "keys" / "sentinel.key").read_text().strip()
    client = redis.Redis(
        host=host.ip, port=SENTINEL_PORT, password=password, socket_timeout=3, decode_responses=True
    )
    try:
        ip, _port = client.sentinel_get_master_addr_by_name(master_name(APP))
        return str(ip)
    finally:
        client.close()


def replication_events(rc: PairCluster) -> list[dict[str, Any]]:
    return [e for e in rc.api("GET", "/api/events") if e["kind"] == "redis-replication"]


def test_a_redis_replica_whose_host_died_is_an_event_and_shown_gone(rc: PairCluster) -> None:
    wait_for(lambda: redis_whole(rc), 120, "the app's Redis pair to be whole")
    master_ip = redis_master(rc)
    (lost,) = [h for h in rc.pair if h.ip != master_ip]
    # The same words may have been said while the pair was made (a new
    # replica held down until it answered), and cleared since: only an
    # event raised after the power-off counts (one from before made the
    # test read the view 0.0 s after it, before anything knew).
    before = {(e["ts"], e["message"]) for e in replication_events(rc)}
    rc.power_off(lost)
    off = time.monotonic()

    def said_gone() -> list[dict[str, Any]]:
        return [
            e
            for e in replication_events(rc)
            if f"the sentinels hold {lost.ip}:" in e["message"]
            and (e["ts"], e["message"]) not in before
        ]

    try:
        (event,) = wait_for(said_gone, SAID_WITHIN_S, "an event saying the replica is gone")
        shown = redis_info(rc)
        print(f"replica's host off: an event {time.monotonic() - off:.1f} s after")
    except AssertionError:
        print(rc.logs_tail(), rc.sentinel_logs())
        raise
    gone = f"master: no replica is up: the sentinels hold {lost.ip}:{rc_port(shown)} down"
    assert gone in event["message"], event
    # The info view: the master still named, the problem said (the replica's
    # own last push is shown until it is 20 s old).
    assert shown["redis_master"], shown
    assert gone in shown["redis_problem"], shown


def rc_port(shown: dict[str, Any]) -> str:
    """The app's Redis port (both copies share it), from the master's address."""
    return str(shown["redis_master"]).rsplit(":", 1)[-1]
