"""Issue 16 through the whole platform: `roost servicehost replace OLD NEW`
after a servicehost of a pair is lost for good.

Namespace hosts: a controller, a runner, a router and three servicehosts,
which `cluster init` makes one pair and a spare; etcd (`roost statedb`,
`--etcd-hosts`) on the controller, runner and router hosts, so that losing
two servicehosts leaves it whole. An app (tests/cluster/pairapp) with
PostgreSQL and Redis on the pair. The replacement is refused while the
standby's servicehost answers; once it is powered off, the spare takes its
place: its Patroni member becomes the synchronous standby, the app's Redis
gets its replica there, the runner's data proxy lists it; the lost host is
retired (not listed, its sentinel no longer asked) and, booted again, runs
nothing of the pair. Then the
primary's servicehost is powered off too: the spare takes over, and the
app's writes resume through the same address with every acknowledged row.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.cluster import wait_for
from tests.cluster.harness import Host
from tests.cluster.paircluster import (
    APP,
    REST_PORT,
    PairCluster,
    Writer,
    app_get,
    pair_cluster,
    redis_info,
    redis_whole,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[PairCluster]:
    # A pair and a spare; etcd away from the servicehosts.
    with pair_cluster("roost-sh-replace-", spares=1, etcd="away") as c:
        yield c


def replace(rc: PairCluster, old: Host, new: Host, check: bool = True) -> Any:
    done = rc.cli("servicehost", "replace", old.ip, new.ip, "--json", check=check)
    return done if not check else json.loads(done.stdout)


def redis_replica_on(rc: PairCluster, host: Host) -> bool:
    """The app's Redis has its replica on `host`, streaming; the only problem
    allowed is the lost host's sentinel, which the address book still counts
    (docs/architecture.md says so under Not yet)."""
    info = redis_info(rc)
    problem = str(info.get("redis_problem", ""))
    return (
        str(info.get("redis_replica", "")).startswith(f"{host.ip}:")
        and bool(info.get("redis_master"))
        and all(p.endswith("sentinels watch it") for p in problem.split("; ") if p)
    )


def lost_back_is_refused(rc: PairCluster, lost: Host, primary: Host) -> None:
    """The replaced host retired (controller/retired.py, servicehost/
    retirement.py): not listed, forgotten by the other servicehosts'
    sentinel sets; booted again, it reads that it was replaced and runs
    nothing of the pair (its Patroni never joins the cluster again)."""
    listed = [s["host"] for s in rc.api("GET", "/api/servicehosts")]
    assert lost.ip not in listed, listed
    state = primary.data / "servicehost" / "state.json"
    wait_for(
        lambda: lost.ip in json.loads(state.read_text()).get("retired", []),
        30,
        "the survivor to stop asking the lost host's sentinel",
    )
    rc.boot(lost)
    log = rc.base / "logs" / f"{lost.name}.log"
    wait_for(
        lambda: "replaced for good by " + (rc.spares[0].ip) in log.read_text(errors="replace"),
        60,
        "the lost host, back, to know it was replaced",
    )
    time.sleep(3)  # a Patroni started anyway would have registered by now (loop_wait 2 s)
    assert rc.patroni(lost, "/health") == 0, "the replaced host runs its pair's Patroni again"
    members = rc.rest(primary, REST_PORT, "/cluster", timeout=5).json()["members"]
    assert lost.ip not in [m["name"] for m in members], members
    listed = [s["host"] for s in rc.api("GET", "/api/servicehosts")]
    assert lost.ip not in listed, "its status push is refused"


def test_a_spare_takes_a_lost_servicehosts_place(rc: PairCluster) -> None:
    primary = wait_for(rc.primary, 30, "the pair's primary")
    lost = next(h for h in rc.pair if h is not primary)
    (spare,) = rc.spares
    wait_for(lambda: redis_whole(rc), 90, "the app's Redis pair to be whole")
    refused = replace(rc, lost, spare, check=False)
    assert refused.returncode != 0 and "still answers" in refused.stderr, refused

    writer = Writer(rc)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= 50, 60, "the app's writes")
        rc.power_off(lost)
        done = replace(rc, lost, spare)
        assert done["pairs"] == ["pair-1"] and done["redis_replicas"] == [APP], done
        assert done["rolled"] == [APP] and not done["problems"], done
        try:
            wait_for(lambda: rc.sync_standby(primary) == spare.ip, 180, "the spare synchronous")
            wait_for(lambda: redis_replica_on(rc, spare), 90, "the app's Redis replica on it")
        except AssertionError:
            print(rc.logs_tail(), rc.pair_logs(), rc.sentinel_logs())
            raise
        proxy = rc.runners[0].data / "runner" / "dataproxy" / "haproxy.cfg"
        wait_for(lambda: spare.ip in proxy.read_text(), 90, "the data proxy to list the spare")
        events = [e["kind"] for e in rc.api("GET", "/api/events")]
        assert "servicehost-replaced" in events
        lost_back_is_refused(rc, lost, primary)

        # Redundancy is back: the primary's host lost too, the spare serves.
        n = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= n + 50, 60, "writes with the new standby")
        killed_at = time.monotonic()
        rc.power_off(primary)
        try:
            wait_for(lambda: rc.primary() is spare, 90, "the spare to take over")
            wait_for(lambda: any(at > killed_at for _, at in writer.acked), 90, "writes to resume")
        except AssertionError:
            print(rc.logs_tail(), rc.pair_logs())
            raise
    finally:
        writer.stop()
        thread.join(30)
    # Each instance holds its own connection: one cut with the old primary
    # fails its next request, and the app connects again for the one after.
    read = wait_for(
        lambda: (r := app_get(rc, "/ids")).status_code == 200 and r, 60, "the app's rows read"
    )
    stored: Any = read.json()
    lost_rows = {n for n, _ in writer.acked} - set(stored)
    assert not lost_rows, f"committed but lost: {sorted(lost_rows)[:20]} ({len(lost_rows)})"
