"""What a SIGKILLed backupd leaves in staging/ and scratch/ is gone when the
next one starts (roost.backups.leftovers), and nothing else there is."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.backups.layout import Layout
from roost.backups.leftovers import leftovers
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ensure_member, identity
from tests.conftest import free_port, processes_under, wait_until

# A backupd at work when it is killed: a backup staged, a drill's and a
# restore's directories, a scratch PostgreSQL (its PGDATA in scratch/pg-*) and
# a recovery's directory, all made by backupd's own code.
AT_WORK = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from roost.backups.catalog import new_id, restore_id
    from roost.backups.layout import Layout
    from roost.backups.scratch import scratch_dir, scratch_postgres

    async def main() -> None:
        layout = Layout(Path(sys.argv[1]))
        backup_id = new_id("pgdump", time.time())
        (layout.staging / backup_id).mkdir()
        (layout.staging / backup_id / "db.dump").write_bytes(b"half a dump")
        (layout.scratch / backup_id).mkdir()
        (layout.scratch / f"restore-{restore_id()}" / "restored").mkdir(parents=True)
        (scratch_dir(layout, "pitr-") / "pgdata").mkdir()
        async with scratch_postgres(layout):
            print("at work", flush=True)
            await asyncio.sleep(600)

    asyncio.run(main())
""")


def test_only_what_backupd_makes_is_named() -> None:
    staging = ["data-20260101T000000Z-0a1b2c", "restore", "notes.txt", "data-2026-x"]
    scratch = [
        "pgdump-20260101T000000Z-abcdef", "restore-0123456789ab", "pitr-0123456789ab",
        "pg-k2_x9abc", "redis-abcdefgh", "drill-12345678", "pitr-a1b2c3d4",
        "restore-xyz", "pg-short", "mine", "..",
    ]  # fmt: skip
    assert leftovers(staging, scratch) == (
        ["data-20260101T000000Z-0a1b2c"],
        [
            "drill-12345678", "pg-k2_x9abc", "pgdump-20260101T000000Z-abcdef",
            "pitr-0123456789ab", "pitr-a1b2c3d4", "redis-abcdefgh", "restore-0123456789ab",
        ],
    )  # fmt: skip


@pytest.fixture
def data() -> Iterator[Path]:
    # Under /tmp, reachable: the scratch servers run as roost-backup.
    root = Path(tempfile.mkdtemp(prefix="roost-leftovers-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _start_backupd(data: Path, log: Path) -> subprocess.Popen[bytes]:
    keys = ensure_member(data / "keys", "backupd", identity("backupd", "local"))
    ep = Endpoint(f"tcp://127.0.0.1:{free_port()}", keys.public_text)
    ClusterConfig(endpoints={"backupd": [ep]}).save(data / "cluster.json")
    env = {**os.environ, "ROOST_BACKUP_SCHEDULE": "off", "ROOST_METRICS_PORT": "0"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "roost", "--data", str(data), "backupd"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_a_killed_backupds_staging_and_scratch_are_cleared_at_the_next_start(
    data: Path,
) -> None:
    layout = Layout(data)
    layout.create()
    # Not backupd's: `roost restore --from`'s staging, an operator's file.
    (layout.staging / "restore").mkdir()
    (layout.scratch / "notes.txt").write_text("mine")
    worker = subprocess.Popen(
        [sys.executable, "-c", AT_WORK, str(data)], stdout=subprocess.PIPE
    )  # fmt: skip
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"at work\n"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    left = sorted(p.name for p in layout.scratch.iterdir())
    assert len(left) == 5 and any((p / "pgdata").is_dir() for p in layout.scratch.glob("pg-*"))
    # Its scratch server dies with it.
    wait_until(lambda: not processes_under(data), 60, "the scratch server gone")

    log = data / "backupd.log"
    backupd = _start_backupd(data, log)
    try:
        deadline = time.monotonic() + 120
        while b"serving on" not in log.read_bytes():
            assert backupd.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        backupd.terminate()
        backupd.wait(60)
    assert sorted(p.name for p in layout.staging.iterdir()) == ["restore"]
    assert sorted(p.name for p in layout.scratch.iterdir()) == ["notes.txt"]
    assert processes_under(data) == []
