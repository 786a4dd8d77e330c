"""Issue 16 through the whole platform: a spare takes a lost servicehost's
place by itself, and every host restarted at once comes back with its data.

Namespace hosts (tests/cluster/paircluster): a controller, a runner, a
router, two servicehosts that `cluster init` pairs and a spare; etcd on the
controller, runner and router hosts, and the state database a Patroni pair
on the runner's and the router's hosts (`--state-hosts`). The controllers
replace a paired servicehost silent for 20 s (ROOST_SPARE_AFTER_S; 10
minutes by default).

1. The standby's servicehost is powered off: with no command, the lease
   holder makes the spare the pair's synchronous standby and its Redis
   replica, says so in an event (once), and once every live sentinel has
   forgotten the lost one and knows a replica it could promote, the app's
   Redis pair is whole with nothing wrong: the lost host's sentinel and
   copy are no longer counted.
2. Every host still on (the lost one stays off) loses power at once: every
   daemon, Patroni, PostgreSQL, etcd, Redis, sentinel and HAProxy killed,
   then started again as a boot would (etcd and the state database, then
   the controller, then the rest). Both Patroni clusters elect a primary
   with a synchronous standby again, every app the API acknowledged and
   every row the app saw committed is there, and the app writes and
   reaches its Redis through the same addresses.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from roost.servicehost import sentinel
from roost.servicehost.sentinel import master_name
from roost.wire.cluster import ClusterConfig
from tests.cluster.cluster import wait_for
from tests.cluster.harness import Host
from tests.cluster.paircluster import (
    APP,
    PairCluster,
    Writer,
    app_get,
    pair_cluster,
    redis_info,
    redis_whole,
)

# Each test waits on a pg_basebackup or a whole cluster's boot, slow on a
# loaded machine: more than the suite's 300 s each (setup included).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

SPARE_AFTER_S = 20
SENTINEL_PORT = 26379
# From a servicehost's look to the API showing it: a look every 5 s
# (redispairs.WATCH_INTERVAL_S), a push every 5 s (status.PUSH_INTERVAL_S),
# and room for a loaded machine.
SHOWN_S = 15


STATE_REST_PORT = 8008  # the state database's Patroni (roost.statedb)


class SpareCluster(PairCluster):
    """A pair, a spare, etcd away from the servicehosts, and the state
    database a Patroni pair on the runner's and the router's hosts."""

    @property
    def state_hosts(self) -> list[Host]:
        return [self.runners[0], self.routers[0]]

    def state_args(self) -> list[str]:
        return [
            "--state-hosts", ",".join(h.ip for h in self.state_hosts),
            "--etcd-hosts", ",".join(h.ip for h in self.etcd_hosts),
        ]  # fmt: skip

    def start_state(self) -> None:
        super().start_state()  # `roost statedb` on the etcd hosts: etcd, and Patroni there
        self.state_url = ClusterConfig.load(self.controllers[0].data / "cluster.json").state_url
        self.wait_state()

    def state_rest(self, host: Host, path: str) -> int:
        try:
            return self.rest(host, STATE_REST_PORT, path).status_code
        except httpx.TransportError:
            return 0

    def wait_state(self) -> None:
        """The state database with a primary and a synchronous standby."""
        try:
            wait_for(
                lambda: sum(self.state_rest(h, "/primary") == 200 for h in self.state_hosts) == 1,
                180,
                "the state database's primary",
            )
            wait_for(
                lambda: any(self.state_rest(h, "/sync") == 200 for h in self.state_hosts),
                120,
                "the state database's synchronous standby",
            )
        except AssertionError:
            print(self.logs_tail(40))
            raise


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[SpareCluster]:
    env = {"ROOST_SPARE_AFTER_S": str(SPARE_AFTER_S)}
    with pair_cluster("roost-pair-spare-", spares=1, etcd="away", env=env, cls=SpareCluster) as c:
        assert isinstance(c, SpareCluster)
        yield c


def replaced_events(rc: SpareCluster) -> list[dict[str, Any]]:
    return [e for e in rc.api("GET", "/api/events") if e["kind"] == "servicehost-replaced"]


def sentinel_client(host: Host) -> redis.Redis:
    password = (host.data / "keys" / "sentinel.key").read_text().strip()
    return redis.Redis(
        host=host.ip, port=SENTINEL_PORT, password=password, socket_timeout=3,
        decode_responses=True,
    )  # fmt: skip


def other_sentinels(host: Host) -> int:
    """How many other sentinels the sentinel on `host` knows watch the app's
    master (-1: it does not answer)."""
    client = sentinel_client(host)
    try:
        return int(client.sentinel_master(master_name(APP))["num-other-sentinels"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return -1
    finally:
        client.close()


def good_replicas(host: Host) -> set[str]:
    """The replicas of the app's master the sentinel on `host` could promote
    (sentinel.good_replica over its SENTINEL REPLICAS, as the servicehost
    judges them), by address."""
    client = sentinel_client(host)
    try:
        replicas = client.sentinel_slaves(master_name(APP))
    except (redis.RedisError, OSError):
        return set()
    finally:
        client.close()
    fields = [{k: str(v) for k, v in r.items()} for r in replicas]
    return {r.get("ip", "") for r in fields if sentinel.good_replica(r)}


def resets(host: Host) -> int:
    """How many times the sentinel on `host` was told to forget the app's
    master's replicas and sentinels (SENTINEL RESET), from its log."""
    log = host.data / "servicehost" / "logs" / "sentinel.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count(f"+reset-master master {master_name(APP)} ")


def held(check: Callable[[], bool], seconds: float) -> bool:
    """`check` was true at every look for `seconds` on end (not just once)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(1)
    return True


def write_some(rc: SpareCluster, count: int) -> Writer:
    """`count` more rows the app saw committed (at least)."""
    writer = Writer(rc)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= count, 90, f"{count} writes")
    finally:
        writer.stop()
        thread.join(30)
    return writer


def test_a_spare_takes_a_lost_servicehosts_place_by_itself(rc: SpareCluster) -> None:
    primary = wait_for(rc.primary, 30, "the pair's primary")
    lost = next(h for h in rc.pair if h is not primary)
    (spare,) = rc.spares
    wait_for(lambda: redis_whole(rc), 90, "the app's Redis pair to be whole")
    assert replaced_events(rc) == []
    live = [primary, spare, rc.controllers[0]]
    reset_before = {h.name: resets(h) for h in live}
    rc.power_off(lost)
    try:
        events = wait_for(
            lambda: replaced_events(rc), 150, "the spare to replace the lost servicehost"
        )
        wait_for(lambda: rc.sync_standby(primary) == spare.ip, 180, "the spare synchronous")
        wait_for(lambda: redis_whole(rc), 120, "the app's Redis pair whole again")
        # Two SENTINEL RESETs follow a replacement: the spare's, making its
        # copy (every replica forgotten and found again), and the primary's
        # servicehost's once it learns the lost host is retired (the lost
        # sentinel forgotten). After each the sentinels know no replica for a
        # few seconds, until they read the master's INFO and then the
        # replica's: "cannot fail over" is the truth then. Once every live
        # sentinel has had both, knows the two others and could promote the
        # spare's copy (the replica whichever copy was master: the lost host's
        # failed over to the survivor's), nothing is wrong for good: a look the servicehost makes
        # after that is shown within SHOWN_S, and the pair is whole from then.
        wait_for(
            lambda: all(resets(h) >= reset_before[h.name] + 2 for h in live),
            90,
            "both sentinel resets",
        )
        wait_for(
            lambda: all(other_sentinels(h) == 2 and spare.ip in good_replicas(h) for h in live),
            90,
            "every live sentinel to know the others and the spare's copy as a good replica",
        )
        time.sleep(SHOWN_S)
        # And nothing wrong for good: the lost host's sentinel is not counted
        # (it reported "only 3 of 4 sentinels watch it" once they had reset),
        # and the lost copy, which the sentinels may learn again from the
        # master's INFO until its repl-timeout, is no replica they count.
        assert held(lambda: redis_whole(rc), 15), redis_info(rc)
    except AssertionError:
        print(rc.logs_tail(), rc.pair_logs(), rc.sentinel_logs())
        raise
    (event,) = events
    assert "automatically" in event["message"] and f"by {spare.ip}" in event["message"], event
    assert lost.ip in event["message"] and "pair-1" in event["message"], event
    # Once: the lost host stays silent, no second replacement is tried.
    assert [e["message"] for e in replaced_events(rc)] == [event["message"]]
    assert not [e for e in rc.api("GET", "/api/events") if e["kind"].endswith("replace-failed")]


def reboot(rc: SpareCluster, hosts: list[Host]) -> None:
    """Power lost on every host of `hosts` at once (each silenced first,
    then everything in it killed), then each started as a boot would: etcd
    and the state database first, the controller once its database has a
    primary (a unit ordered after it), then the rest."""
    for h in hosts:
        rc.net.partition(h)
    for h in hosts:
        rc.net.kill_host(h)
    for h in hosts:
        rc.net.heal(h)
    for h in rc.etcd_hosts:
        argv = [sys.executable, "-m", "roost", "--data", str(h.data), "statedb"]
        log = rc.base / "logs" / f"{h.name}-etcd.log"
        rc.net.spawn(h, argv, rc.env_for(h.ip), log)
    rc.wait_state()
    for h in rc.controllers:
        rc.start_daemons(h)
    try:
        for h in rc.controllers:
            wait_for(functools.partial(rc.health, h), 90, f"the API of {h.name}")
    except AssertionError:
        # Why a controller did not come back (seen twice in full runs, the
        # cause not yet known): its log and the state database's.
        print(rc.logs_tail(40))
        raise
    for h in hosts:
        if h not in rc.controllers:
            rc.start_daemons(h)


def test_every_host_restarted_at_once_comes_back_with_its_data(rc: SpareCluster) -> None:
    before = write_some(rc, 30)
    assert app_get(rc, "/redis/41").text == "41"
    # The state database's writes: apps the API said it created.
    kept = [f"kept-{i}" for i in range(5)]
    for name in kept:
        rc.cli("apps", "create", name)
    on = [h for h in rc.net.hosts.values() if not h.partitioned]
    assert len(on) == 5, [h.name for h in on]  # all but the servicehost lost above
    reboot(rc, on)
    try:
        wait_for(rc.primary, 180, "the pair's Patroni to elect a primary")
        wait_for(rc.synchronous, 180, "the pair's standby to be synchronous")
        read = wait_for(
            lambda: (r := app_get(rc, "/ids")).status_code == 200 and r, 180, "the app's rows"
        )
    except AssertionError:
        print(rc.logs_tail(), rc.pair_logs())
        raise
    apps = {a["name"] for a in rc.api("GET", "/api/apps")}
    assert {APP, *kept} <= apps, sorted(apps)
    stored = set(read.json())
    lost_rows = {n for n, _ in before.acked} - stored
    assert not lost_rows, f"committed but lost: {sorted(lost_rows)[:20]} ({len(lost_rows)})"
    # The app writes again and reaches its Redis, through the same addresses.
    after = write_some(rc, 5)
    assert after.acked
    wait_for(lambda: app_get(rc, "/redis/42").text == "42", 90, "the app's Redis")
    rc.cli("apps", "create", "after-reboot")  # the state database takes writes
