"""The suite's end-of-run sweep of empty tenant cgroups spares new ones: a
cgroup is empty between its mkdir and its first process joining, and another
test run on the machine may be there."""

from __future__ import annotations

import os
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
