"""A rolling upgrade from the previous release to this tree under load (issue 20).

The previous release (tests/previous_release.py: the tag CHANGELOG.md names,
or its commit where a clone carries no tags, as CI's does) is checked out in a
git worktree and a netns
cluster is built by that release's own code: its `roost cluster init` and
`join`, its daemons (one controller, two runners, a router binding its port
itself with two workers, as that release's did), its CLI deploying its own
examples/hello with two web instances. This tree's `roost cluster upgrade`
then replaces every host under steady HTTP load through the router
(tests/e2e/load.py): the controller first; each runner of the old release,
which cannot hand its instances over, is drained first (each instance
started on the other runner and routed before it stops), replaced and
undrained; the router is taken over on its port (tests/cluster/
upgrade_hosts.py). This tree's .venv runs both releases: their
dependencies are the same (pyproject.toml differs only in its version).

Checked: 0 failed requests; every replaced daemon is a new process; the
controller's /api/health and every runner's heartbeat report this release;
the app serves on, its two web instances up on two runners; no drain left.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost import __version__
from tests.cluster.cluster import wait_for
from tests.cluster.upgrade_hosts import (
    ReleaseCluster,
    check_old_router_cut,
    serving,
    version_at,
    web_up,
    worktree,
)
from tests.previous_release import previous_release

APP = "upgraded"


@pytest.fixture(scope="module")
def release(cluster_ok: None) -> Iterator[Path]:
    """The previous release's sources, in a worktree removed afterwards."""
    with worktree(previous_release().rev) as tree:
        yield tree


@pytest.fixture(scope="module")
def cluster(release: Path) -> Iterator[ReleaseCluster]:
    base = Path(tempfile.mkdtemp(prefix="roost-upgrade-release-"))
    c = ReleaseCluster(base, release / "src", controllers=1, runners=2, routers=1)
    with serving(c, APP, release / "examples" / "hello"):
        yield c


def test_rolling_upgrade_from_the_latest_release(cluster: ReleaseCluster, release: Path) -> None:
    assert version_at(release / "src") != __version__
    hosts = cluster.api("GET", "/api/hosts")
    assert {h.get("release", "") for h in hosts} == {""}  # 0.1.0 knows no releases
    before_pids = cluster.daemon_pids()
    [router] = cluster.routers
    tag = f"v{previous_release().version}"

    # The controller and the runners: no request fails.
    with cluster.load(APP) as load:
        rc, out = cluster.upgrade(
            "--no-backup", "--health-timeout", "120", only=[*cluster.controllers, *cluster.runners]
        )
    assert rc == 0, out + cluster.logs_tail()
    print(out)
    r = load.result
    print(f"controller and runners from {tag}: {r.total} requests, {len(r.failures)} failed")
    assert r.failures == [], r.failures[:10]
    assert r.ok > 0
    for runner in cluster.runners:  # drained first: 0.1.0 runners kill their instances
        assert f"{runner.ip}: draining" in out and f"{runner.ip}: undrained" in out, out

    # The router, taken over on its port. Requests on new connections (and
    # those waiting in its backlog) all succeed. 0.1.0's router cannot tell
    # a keep-alive client to go (its drain sends no Connection: close): it
    # closes its connections as it stops, and a request a client sent on
    # one at that moment fails; at most one per keep-alive client.
    fresh, kept = cluster.load(APP, keep_alive=0), cluster.load(APP, fresh=0)
    with fresh, kept:
        rc, out = cluster.upgrade("--no-backup", "--health-timeout", "120", only=[router])
    assert rc == 0, out + cluster.logs_tail()
    print(out)
    check_old_router_cut(f"router from {tag}", fresh, kept)

    after_pids = cluster.daemon_pids()
    assert all(after_pids[name] != pid for name, pid in before_pids.items()), after_pids
    assert cluster.health_of(cluster.controllers[0])["version"] == __version__
    hosts = cluster.api("GET", "/api/hosts")
    assert {h["release"] for h in hosts} == {__version__}
    assert not any(h["drained"] for h in hosts)
    # The copies spread over both runners again once both take placements.
    wait_for(lambda: len({i["host_id"] for i in web_up(cluster, APP)}) == 2, 60, "two runners")
    assert cluster.serving(APP, "Hello")
