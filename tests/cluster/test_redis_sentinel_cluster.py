"""An app's Redis through the whole platform, two servicehosts set up by
`roost cluster init` (issue 16): `roost services add redis` makes the master
on one servicehost and its replica on the other, `roost services info`
shows both; the master's servicehost powered off, Sentinel (both
servicehosts' and the controller's `roost sentinel`) promotes the replica,
info names the new master and its missing replica, and the lease holder
records a redis-replication event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.cluster import RoostCluster, running_cluster, wait_for

pytestmark = pytest.mark.cluster

APP = "pairs"


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[RoostCluster]:
    with running_cluster(
        "roost-redis-pair-", controllers=1, runners=1, routers=1, servicehosts=2
    ) as c:
        yield c


def info(rc: RoostCluster) -> dict[str, Any]:
    return dict(json.loads(rc.cli("services", "info", "redis", "--json", "--app", APP).stdout))


def test_the_platform_keeps_an_apps_redis_as_a_pair_and_says_when_it_fails_over(
    rc: RoostCluster,
) -> None:
    rc.cli("apps", "create", APP)
    rc.cli("services", "add", "redis", "--app", APP)
    first = info(rc)
    assert "copy" not in first  # the pair's secrets are never shown
    by_ip = {h.ip: h for h in rc.servicehosts}
    holder = first["holder"]
    port = first["port"]
    other = next(ip for ip in by_ip if ip != holder)

    def paired() -> bool:
        now = info(rc)
        return (now.get("redis_master"), now.get("redis_replica"), now.get("redis_problem")) == (
            f"{holder}:{port}", f"{other}:{port}", "",
        )  # fmt: skip

    wait_for(paired, 60, "info showing the master on the holder and the replica on the other")
    text = rc.cli("services", "info", "redis", "--app", APP).stdout
    assert f"master: {holder}:{port}" in " ".join(text.split())

    rc.power_off(by_ip[holder])

    def failed_over() -> bool:
        now = info(rc)
        return now.get("redis_master") == f"{other}:{port}" and "no replica" in str(
            now.get("redis_problem")
        )

    try:
        wait_for(failed_over, 90, "info naming the replica as master, alone")
    except AssertionError:
        print(info(rc), rc.logs_tail())
        for h in [*rc.servicehosts, *rc.controllers]:
            log = h.data / "servicehost" / "logs" / "sentinel.log"
            if log.exists():
                print(f"===== {h.name} sentinel\n" + log.read_text(errors="replace")[-4000:])
        raise

    def event() -> bool:
        events = rc.api("GET", "/api/events")
        return any(e.get("kind") == "redis-replication" for e in events)

    wait_for(event, 60, "a redis-replication platform event")
