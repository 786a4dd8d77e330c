"""Two filers for one tree (issue 17's open point): `weed mount
-filer=A,B` goes on through B when A dies. SeaweedFS 4.48's mount tries
each filer in turn and keeps the one that answers (weed/mount/
wfs_filer_client.go); filers with stores of their own find each other
through the master and replay each other's metadata, so B holds what was
written through A, once that replay has run (asynchronous: the test waits
for it, as a second filer's store would lag an acknowledged create by that
much). A write needs the master too (each new chunk's volume is assigned
by it): with the master gone the mount waits and fails, which is what a
namespace test saw when the first controller host, master and filer both,
was killed."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.datadir.seaweed import Endpoint
from tests.conftest import wait_until
from tests.datadir.seaweedkit import Cluster, seaweed_cluster, write_fsync

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.fail("needs root and /dev/fuse (FUSE mounts); the suite runs as root")
    with seaweed_cluster(tmp_path) as c:
        yield c


def _listed(filer: Endpoint, directory: str) -> set[str]:
    """The names a filer's own store holds in `directory`."""
    req = urllib.request.Request(
        f"http://{filer}{directory}?limit=1000", headers={"Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            entries = json.load(r).get("Entries") or []
    except OSError:
        return set()
    return {e["FullPath"].rsplit("/", 1)[1] for e in entries}


def test_a_mount_given_two_filers_writes_on_when_the_first_dies(cluster: Cluster) -> None:
    second = cluster.add_filer("filer2")
    a = cluster.mount("mount-a", filers=[cluster.filer, second])
    (a / "shop").mkdir()
    before = {f"before-{i}": os.urandom(20_000) for i in range(5)}
    for name, data in before.items():
        write_fsync(a / "shop" / name, data)
    wait_until(lambda: _listed(second, "/shop/") >= set(before), 30, "filer2 to replay them")

    cluster.kill("filer")
    after = {f"after-{i}": os.urandom(20_000) for i in range(20)}
    for name, data in after.items():
        write_fsync(a / "shop" / name, data)  # through filer2: no error, no retry

    # Another mount, of the second filer alone, reads every file back.
    b = cluster.mount("mount-b", filers=[second])
    for name, data in {**before, **after}.items():
        assert (b / "shop" / name).read_bytes() == data, name
