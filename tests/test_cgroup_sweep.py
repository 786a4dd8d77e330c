"""The suite's end-of-run sweeps: empty tenant cgroups (new ones spared: a
cgroup is empty between its mkdir and its first process joining, and another
test run on the machine may be there), PostgreSQL's orphan segments, and the
sockets weed leaves in /tmp."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import remove_empty_tenant_cgroups


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_just_made_empty_cgroup_is_spared_and_an_old_one_removed() -> None:
    root = Path("/sys/fs/cgroup")
    parent = root if (root / "cgroup.controllers").is_file() else root / "pids"  # v2 or v1
    fresh = parent / f"roost-sweeptest-{uuid.uuid4().hex[:8]}"
    fresh.mkdir()
    try:
        remove_empty_tenant_cgroups(older_than=time.time() - 120)
        assert fresh.is_dir()
        remove_empty_tenant_cgroups(older_than=time.time() + 1)
        assert not fresh.exists()
    finally:
        if fresh.exists():
            fresh.rmdir()


def test_an_orphan_postgres_segment_goes_and_a_mapped_one_stays(tmp_path: Path) -> None:
    import mmap

    from tests.conftest import remove_orphan_pg_segments

    orphan, live = (tmp_path / f"PostgreSQL.{n}" for n in (111, 222))
    for seg in (orphan, live):
        seg.write_bytes(b"\0" * 4096)
    with live.open("r+b") as fh, mmap.mmap(fh.fileno(), 4096):
        # Made before `since` (another run's): both kept.
        assert remove_orphan_pg_segments(time.time() + 1, time.time() + 2, shm=tmp_path) == 0
        # In the window: the one a live process maps stays, the orphan goes.
        assert remove_orphan_pg_segments(time.time() - 60, time.time() + 1, shm=tmp_path) == 1
        assert live.exists() and not orphan.exists()


def test_a_dead_weed_socket_goes_and_a_listening_one_stays(tmp_path: Path) -> None:
    from tests.conftest import remove_stale_weed_sockets

    dead, live = tmp_path / "seaweedfs-filer-1.sock", tmp_path / "seaweedfs-master-grpc-2.sock"
    other = tmp_path / "something-else.sock"
    for path in (dead, other):
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))  # closed: nothing answers, as after weed stopped
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(live))
        listening.listen()
        # Made before `since` (another run's): kept.
        assert remove_stale_weed_sockets(time.time() + 1, time.time() + 2, tmp=tmp_path) == 0
        assert remove_stale_weed_sockets(time.time() - 60, time.time() + 1, tmp=tmp_path) == 1
        assert live.exists() and other.exists() and not dead.exists()
