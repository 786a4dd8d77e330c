"""A rolling upgrade from the previous release to this tree under load (issue 20).

The previous release (tests/previous_release.py: the tag CHANGELOG.md names,
or its commit where a clone carries no tags, as CI's does) is checked out in a
git worktree and a netns
cluster is built by that release's own code: its `roost cluster init` and
`join`, its daemons (one controller, two runners, a router under its
keeper, which holds the port as a systemd socket unit would), its CLI
deploying its own examples/hello with two web instances. This tree's
`roost cluster upgrade` then replaces every host under steady HTTP load
through the router (tests/e2e/load.py, new and keep-alive connections):
the controller first; each runner hands its instances over to its
successor (SIGUSR2), the router's keeper starts the new router on the held
socket before the old one drains (tests/cluster/upgrade_hosts.py). This
tree's .venv runs both releases: their dependencies are the same.

Checked: 0 failed requests; no runner drained and the app's instances the
same processes; every replaced daemon is a new process; the controller's
/api/health and every runner's heartbeat report this release; the app
serves on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost import __version__
from tests.cluster.upgrade_hosts import ReleaseCluster, serving, version_at, web_up, worktree
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
    previous = version_at(release / "src")
    assert previous != __version__
    hosts = cluster.api("GET", "/api/hosts")
    assert {h.get("release", "") for h in hosts} == {previous}
    before_pids = cluster.daemon_pids()
    instances = {i["instance_id"]: i["pid"] for i in web_up(cluster, APP)}
    tag = f"v{previous}"

    # Every host, the controller first, under load on new and keep-alive
    # connections: no request fails.
    with cluster.load(APP) as load:
        rc, out = cluster.upgrade("--no-backup", "--health-timeout", "120")
    assert rc == 0, out + cluster.logs_tail()
    print(out)
    r = load.result
    print(f"every host from {tag}: {r.total} requests, {len(r.failures)} failed")
    assert r.failures == [], (r.failures[:10], r.failures[-3:], cluster.logs_tail())
    assert r.ok > 0
    # The runners of a release that hands over are not drained: their
    # instances are adopted by the successors, the same processes.
    assert "draining" not in out, out
    assert {i["instance_id"]: i["pid"] for i in web_up(cluster, APP)} == instances

    after_pids = cluster.daemon_pids()
    assert all(after_pids[name] != pid for name, pid in before_pids.items()), after_pids
    assert cluster.health_of(cluster.controllers[0])["version"] == __version__
    hosts = cluster.api("GET", "/api/hosts")
    assert {h["release"] for h in hosts} == {__version__}
    assert not any(h["drained"] for h in hosts)
    assert cluster.serving(APP, "Hello")
