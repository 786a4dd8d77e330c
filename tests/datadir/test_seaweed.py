"""Issue 17's cluster engine, real: SeaweedFS (roost.datadir.seaweed) with
two volume servers and placement 001, mounted twice over FUSE. What one
mount writes the other reads; a volume server SIGKILLed while files are
written and fsync'd loses none whose fsync returned (read back through both
mounts, the killed server's copy gone)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.datadir import seaweed
from tests.conftest import wait_until
from tests.datadir.seaweedkit import Cluster, seaweed_cluster, write_fsync

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.fail("needs root and /dev/fuse (FUSE mounts); the suite runs as root")
    with seaweed_cluster(tmp_path) as c:
        yield c


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def test_what_one_mount_writes_the_other_reads(cluster: Cluster) -> None:
    a, b = cluster.mount("mount-a"), cluster.mount("mount-b")
    (a / "shop" / "media").mkdir(parents=True)
    write_fsync(a / "shop" / "media" / "up.jpg", b"jpeg")
    wait_until(lambda: _read(b / "shop" / "media" / "up.jpg") == b"jpeg", 30, "the file at b")
    write_fsync(b / "shop" / "media" / "up.jpg", b"jpeg, edited at b")
    wait_until(
        lambda: _read(a / "shop" / "media" / "up.jpg") == b"jpeg, edited at b", 30, "the edit at a"
    )


def test_a_copy_host_killed_during_writes_loses_no_acknowledgedwrite_fsync(
    cluster: Cluster,
) -> None:
    a = cluster.mount("mount-a")
    (a / "shop").mkdir()
    acked: dict[str, str] = {}
    killed = threading.Event()
    failed: list[str] = []

    def writer() -> None:
        for i in range(400):
            data = os.urandom(50_000) + str(i).encode()
            try:
                write_fsync(a / "shop" / f"f{i}", data)
            except OSError as exc:
                failed.append(f"f{i}: {exc}")
                return  # the next writes would wait for a placement that cannot be
            acked[f"f{i}"] = hashlib.sha256(data).hexdigest()
            if killed.is_set() and len(acked) > 200:
                return

    t = threading.Thread(target=writer)
    t.start()
    wait_until(lambda: len(acked) >= 20, 60, "writes under way")
    cluster.kill("volume1")  # one of the two copies' hosts dies mid-stream
    killed.set()
    t.join(300)
    assert not t.is_alive()
    assert len(acked) >= 20
    b = cluster.mount("mount-b")  # a fresh view too: nothing from a's cache
    for mount in (a, b):
        lost = [
            n
            for n, h in acked.items()
            if hashlib.sha256(_read(mount / "shop" / n) or b"").hexdigest() != h
        ]
        assert lost == [], f"{len(lost)} acknowledged writes lost at {mount.name}: {lost[:5]}"


def test_a_mount_s_socket_is_where_weed_puts_it_and_goes_with_it(cluster: Cluster) -> None:
    """weed 4.48 puts each mount's unix socket in /tmp, named by a hash of
    its directory, and leaves it there when the mount ends; the path
    computed (seaweed.mount_socket) is the one weed made, and it is gone
    once the mount is stopped."""
    point = cluster.mount("mount-s")
    argv = seaweed.mount_argv("weed", cluster.filer, point, cluster.base / "mount-s-cache")
    sock = seaweed.mount_socket(argv)
    assert sock is not None and sock.is_socket()
    cluster.stop()
    assert not sock.exists()
