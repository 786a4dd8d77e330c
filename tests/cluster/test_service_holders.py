"""Two servicehosts in a cluster set up as an operator would (`roost cluster
init`, network-namespace hosts): every servicehost's key is named
"servicehost", so the controller tells them apart by their identity's host
(the address), places two apps' databases on different ones and sends each
removal to the holder, which takes the final backup (issue 16).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import RoostCluster, running_cluster, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[RoostCluster]:
    with running_cluster(
        "roost-holders-", controllers=1, runners=1, routers=1, servicehosts=2
    ) as c:
        yield c


def info(rc: RoostCluster, app: str, kind: str) -> dict[str, Any]:
    return dict(json.loads(rc.cli("services", "info", kind, "--json", "--app", app).stdout))


def held(rc: RoostCluster) -> dict[str, set[str]]:
    """servicehost id -> the apps it reports (GET /api/servicehosts)."""
    return {
        h["host"]: {s["app"] for s in h["servers"] if s["app"]}
        for h in rc.api("GET", "/api/servicehosts")
    }


def test_apps_are_placed_apart_and_each_removal_reaches_its_holder(rc: RoostCluster) -> None:
    by_ip = {h.ip: h for h in rc.servicehosts}
    for app in ("far-1", "far-2"):
        rc.cli("apps", "create", app)
        rc.cli("services", "add", "postgres", "--app", app)
    one, two = info(rc, "far-1", "postgres")["holder"], info(rc, "far-2", "postgres")["holder"]
    assert {one, two} == set(by_ip)  # one on each, named by address
    rc.cli("services", "add", "redis", "--app", "far-1")
    assert info(rc, "far-1", "redis")["holder"] == one  # beside its database

    out = rc.cli("services", "remove", "postgres", "--app", "far-2", "--yes", "--json").stdout
    backup = Path(json.loads(out)["backup"])
    assert backup.is_relative_to(by_ip[two].data) and backup.stat().st_size > 0
    out = rc.cli("services", "remove", "postgres", "--app", "far-1", "--yes", "--json").stdout
    assert Path(json.loads(out)["backup"]).is_relative_to(by_ip[one].data)

    def settled() -> bool:  # as the servicehosts report every few seconds
        now = held(rc)
        return "far-2" not in now.get(two, set()) and now.get(one, set()) >= {"far-1"}  # Redis

    wait_for(settled, 30, "the servicehosts' reports after the removals")
