"""Issue 17: the shared tree outlives the host of its first filer, for good.

A cluster from `roost cluster init` with a PostgreSQL state database (in
the root namespace, as tests/cluster/cluster.py runs it): three
controllers (three masters, a Raft group; filers on the first two, their
metadata in the state database's PostgreSQL, datadir/weedstore.py), a
servicehost and a runner (a volume server and the mount each: every file
on both). Files are written through the runner's mount and fsync'd; the
first controller's host is powered off (its network silent, its processes
killed, never back) right after the last write returned. The second
filer, reading the same PostgreSQL, lists every one of them; the
servicehost's mount, on another host, reads each back; and writes go on
through the runner's mount, now served by the second filer and a master
the two left elected (a write that fails meanwhile is written again: how
many failed, and when the first returned, is printed, not asserted). No
app is deployed: the mounts are the roles' own."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from roost.datadir.seaweed import Endpoint
from roost.datadir.weedplan import PLAN_FILE
from tests.cluster.cluster import RoostCluster, running_cluster, wait_for
from tests.cluster.harness import Host
from tests.datadir.seaweedkit import listed, write_fsync

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

FILER_PORT = 7152
WRITES_S = 150.0  # for the writes after the death: a master is elected meanwhile


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[RoostCluster]:
    with running_cluster(
        "roost-filers-",
        shared_data=True,
        controllers=3,
        runners=1,
        routers=0,
        servicehosts=1,
    ) as c:
        yield c
    # The hosts' volumes, mount caches and logs (about 300 MB; the logs were
    # printed if the test failed).
    shutil.rmtree(c.base, ignore_errors=True)


def _mount_of(rc: RoostCluster, host: Host) -> Path | None:
    """The tree's mount on `host`, as seen from the test: through the weed
    mount process's own root (each namespace host has its own mounts)."""
    for pid in rc.net.pids(host):
        try:
            argv = psutil.Process(pid).cmdline()
        except psutil.Error:
            continue
        if len(argv) > 1 and argv[1] == "mount" and "-filer.path=/" in argv:
            (point,) = [a.removeprefix("-dir=") for a in argv if a.startswith("-dir=")]
            mounts = Path(f"/proc/{pid}/mounts").read_text().split("\n")
            if any(m.split()[1:2] == [point] and "fuse.seaweedfs" in m for m in mounts if m):
                return Path(f"/proc/{pid}/root{point}")
    return None


def _write_all(tree: Path, files: dict[str, bytes], done: list[str]) -> None:
    for name, data in files.items():
        write_fsync(tree / name, data)
        done.append(name)


def _write_on(
    tree: Path, files: dict[str, bytes], since: float, deadline: float, log: dict[str, float]
) -> None:
    """Each file written and fsync'd; one that fails (the master's host was
    the first controller's too: each new chunk waits for the masters left
    to elect one and for the volume servers to find it) is written again
    after a second, until `deadline`. `log` gets how many failed and when
    the first write returned (seconds after `since`)."""
    for name, data in files.items():
        while True:
            try:
                write_fsync(tree / name, data)
                break
            except OSError:
                log["failed"] = log.get("failed", 0) + 1
                if time.monotonic() > deadline:
                    return
                time.sleep(1)
        log.setdefault("first_s", time.monotonic() - since)
        log["written"] = log.get("written", 0) + 1


def test_the_first_filer_s_host_lost_for_good_loses_no_acknowledged_file(
    rc: RoostCluster,
) -> None:
    ctl1, ctl2 = rc.controllers[0], rc.controllers[1]
    plan = json.loads((rc.runners[0].data / PLAN_FILE).read_text())
    assert plan["filers"] == [ctl1.ip, ctl2.ip] and plan["store"]["database"] == "roost_weed"
    runner_tree = wait_for(lambda: _mount_of(rc, rc.runners[0]), 90, "the runner's mount")
    svc_tree = wait_for(lambda: _mount_of(rc, rc.servicehosts[0]), 90, "the servicehost's mount")
    tree = runner_tree / "filer-test"
    tree.mkdir()
    before = {f"before-{i}": os.urandom(30_000) for i in range(20)}
    _write_all(tree, before, [])
    # A power cut, at once: nothing waits for a replay between filers.
    rc.power_off(ctl1)
    died = time.monotonic()

    # The second filer has every name (the rows are in PostgreSQL), and
    # another host's mount reads every byte.
    assert listed(Endpoint(ctl2.ip, FILER_PORT), "/filer-test/") == set(before)
    for name, data in before.items():
        assert (svc_tree / "filer-test" / name).read_bytes() == data, name
    print(f"every file read through the servicehost within {time.monotonic() - died:.1f}s")

    # Writes go on through the runner's mount. A blocked FUSE write cannot
    # be interrupted: the writer runs in a thread the test stops waiting for.
    after = {f"after-{i}": os.urandom(30_000) for i in range(20)}
    log: dict[str, float] = {}
    deadline = time.monotonic() + WRITES_S
    writer = threading.Thread(
        target=_write_on, args=(tree, after, died, deadline, log), daemon=True
    )
    writer.start()
    writer.join(WRITES_S + 30)
    print(
        f"after the death: the first write returned at {log.get('first_s', -1):.1f}s, "
        f"{log.get('failed', 0):.0f} attempts failed, all 20 by {time.monotonic() - died:.1f}s"
    )
    assert log.get("written") == len(after), log
    assert listed(Endpoint(ctl2.ip, FILER_PORT), "/filer-test/") == set(before) | set(after)
    for name, data in after.items():
        assert (svc_tree / "filer-test" / name).read_bytes() == data, name
