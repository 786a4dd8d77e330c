"""`roost cluster upgrade` on a netns cluster under steady load (issue 20).

One controller, two runners and a router, each a network namespace, every
host running Roost from a link of its own (tests/cluster/upgrade_hosts.py);
examples/hello with two web instances under steady HTTP load through the
router (tests/e2e/load.py). The upgrade replaces each host's daemons in
turn, with this tree's code: the controller's (TERM, a new one takes the
lease), each runner's (SIGUSR2: the instances stay, the new runner adopts
them), the router's (a new one on the held socket, the old one drains).

Checked: 0 failed requests; every host's daemon is a new process and
reports this release (the controller's /api/health, the runners' heart-
beats); the app's instances are the ones it had (ids and pids: adopted,
not restarted) and its release unchanged. Without a backupd the upgrade is
refused unless --no-backup. And an upgrade whose new runner cannot start
stops at that host, says so, and leaves the hosts after it untouched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost import __version__
from tests.cluster.upgrade_hosts import UpgradableCluster, serving, web_up
from tests.conftest import REPO

APP = "upgraded"


@pytest.fixture(scope="module")
def cluster(cluster_ok: None) -> Iterator[UpgradableCluster]:
    base = Path(tempfile.mkdtemp(prefix="roost-upgrade-"))
    c = UpgradableCluster(base, REPO / "src", controllers=1, runners=2, routers=1)
    with serving(c, APP, REPO / "examples" / "hello"):
        yield c


def instances(c: UpgradableCluster) -> dict[str, int]:
    """The app's web instances that are up: id -> pid."""
    return {i["instance_id"]: i["pid"] for i in web_up(c, APP)}


def test_refused_without_a_backupd_unless_no_backup(cluster: UpgradableCluster) -> None:
    before = cluster.daemon_pids()
    rc, out = cluster.upgrade(replace="false")
    assert rc != 0
    assert "no backupd" in out and "--no-backup" in out, out
    assert cluster.daemon_pids() == before  # nothing replaced


def test_rolling_upgrade_under_load_fails_no_request(cluster: UpgradableCluster) -> None:
    before_pids = cluster.daemon_pids()
    before = instances(cluster)
    release = cluster.api("GET", f"/api/apps/{APP}")["current_release"]
    with cluster.load(APP) as load:
        rc, out = cluster.upgrade("--no-backup", "--health-timeout", "120")
    result = load.result
    assert rc == 0, out + cluster.logs_tail()
    print(f"upgrade under load: {result.total} requests, {len(result.failures)} failed")
    assert result.failures == [], result.failures[:10]
    assert result.ok > 0
    # The order: the controller, then the runners, then the router.
    said = [line.split(":")[0] for line in out.splitlines() if ": replacing (" in line]
    assert said == [h.ip for h in (*cluster.controllers, *cluster.runners, *cluster.routers)]
    after_pids = cluster.daemon_pids()
    assert all(after_pids[name] != pid for name, pid in before_pids.items()), after_pids
    assert cluster.health_of(cluster.controllers[0])["version"] == __version__
    hosts = cluster.api("GET", "/api/hosts")
    assert {h["release"] for h in hosts} == {__version__}
    assert len(hosts) == 2
    assert instances(cluster) == before  # adopted, neither restarted nor moved
    assert cluster.api("GET", f"/api/apps/{APP}")["current_release"] == release


def test_stops_at_the_first_host_that_does_not_come_back(cluster: UpgradableCluster) -> None:
    first, broken = cluster.runners
    before = cluster.daemon_pids()
    rc, out = cluster.upgrade(
        "--no-backup",
        "--health-timeout",
        "20",
        replace=cluster.replace_command(broken=broken.ip),
    )
    assert rc != 0
    assert f"stopped at {broken.ip}" in out, out
    assert "no heartbeat from its runner" in out or "runner is down" in out, out
    assert f"not replaced: {cluster.routers[0].ip}" in out, out
    after = cluster.daemon_pids()
    for h in (cluster.controllers[0], first, broken):
        assert after[h.name] != before[h.name], h.name
    assert after[cluster.routers[0].name] == before[cluster.routers[0].name]
