"""Fixtures for backupd's PostgreSQL side (pgfacts, scratch, barman, pitr).

Their files live on `disk`, a tmpfs of the package's own (tests/tmpfs.py):
Barman's and PostgreSQL's fsyncs were most of a base backup's time on the
machine's busy disk.

`layout`: backupd's directories on `disk` (the scratch user must walk down
to them: pytest's own tmp_path is root's alone). `pg_server`: one
PostgreSQL 15 source (tests/backups/pgsource.py) for the whole package: its
start is seconds, a database a moment. `source`: that server with a fresh
database `app` holding an empty table `t`, dropped after the test with the
replication slots the test made, so each test has the server as it found
it. `barman`: Barman streaming that source as server `sh1` into the test's
own layout, nothing left running after it.

`restic_templates`: initialised restic repositories a test copies instead
of running `restic init` (tests/backups/restictemplate.py).

`based`: a Barman layout (server `base`) with a base backup of the
package's source, taken once: a first base backup is a WAL switch, an
archived segment and a pg_basebackup, most of a Barman test's time. It
holds a database `base` whose table `t` has 200 rows and an index.
`base_barman` streams that server again for one test. Tests recover their
own `app`, made after the backup; the one that corrupts the backup puts
its bytes back.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from roost.backups.barman import Barman, ServerConfig
from roost.backups.layout import Layout
from tests.backups.pgsource import BASE, Based, Source, pg_source
from tests.backups.restictemplate import Templates, make_templates
from tests.conftest import processes_under
from tests.tmpfs import tmpfs_dir


@pytest.fixture(scope="package")
def disk() -> Iterator[Path]:
    with tmpfs_dir("roost-bk-") as base:
        yield base


def _new_layout(disk: Path) -> Layout:
    lay = Layout(Path(tempfile.mkdtemp(prefix="roost-bk-", dir=disk)))
    lay.create()
    return lay


@pytest.fixture
def disk_path(disk: Path) -> Path:
    """A fresh directory on `disk` (0700), for a module to use as its tmp_path."""
    return Path(tempfile.mkdtemp(prefix="t-", dir=disk))


@pytest.fixture
def layout(disk: Path) -> Iterator[Layout]:
    lay = _new_layout(disk)
    yield lay
    shutil.rmtree(lay.data_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def restic_templates(disk: Path) -> Iterator[Templates]:
    base = Path(tempfile.mkdtemp(prefix="roost-restic-", dir=disk))
    try:
        yield make_templates(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="package")
def pg_server(disk: Path) -> Iterator[Source]:
    with pg_source(disk) as src:
        yield src


def _slots(src: Source) -> dict[str, bool]:
    rows = src.sql("SELECT slot_name, active FROM pg_replication_slots")
    return {str(name): bool(active) for name, active in rows}


@pytest.fixture
def source(pg_server: Source) -> Iterator[Source]:
    before = set(_slots(pg_server))
    pg_server.sql("CREATE DATABASE app")
    pg_server.sql("CREATE TABLE t (id int PRIMARY KEY, v text)", "app")
    yield pg_server
    pg_server.sql("DROP DATABASE app WITH (FORCE)")
    # A walsender lets go of its slot a moment after its pg_receivewal is gone.
    deadline = time.monotonic() + 30
    while (made := {s: a for s, a in _slots(pg_server).items() if s not in before}) and any(
        made.values()
    ):
        assert time.monotonic() < deadline, f"replication slots still in use: {made}"
        time.sleep(0.05)
    for slot in made:
        pg_server.sql(f"SELECT pg_drop_replication_slot('{slot}')")


@pytest.fixture
async def barman(source: Source, layout: Layout) -> AsyncIterator[Barman]:
    async with Barman(layout) as b:
        await b.ensure([ServerConfig("sh1", source.pg, immediate_checkpoint=True)])
        yield b
    assert processes_under(layout.data_dir) == []


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def based(pg_server: Source, disk: Path) -> AsyncIterator[Based]:
    lay = _new_layout(disk)
    config = ServerConfig(BASE, pg_server.pg, immediate_checkpoint=True)
    try:
        # A table with rows and an index for the drill to check (and corrupt).
        pg_server.sql(f"CREATE DATABASE {BASE}")
        pg_server.sql("CREATE TABLE t (id int PRIMARY KEY, v text)", BASE)
        pg_server.sql("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 200) g", BASE)
        pg_server.sql("CREATE INDEX t_v ON t (v)", BASE)
        async with Barman(lay) as b:
            await b.ensure([config])
            [(before,)] = pg_server.sql("SELECT clock_timestamp()")
            backup_id = await b.backup(BASE)
        assert processes_under(lay.data_dir) == []
        yield Based(lay, config, before, backup_id)
    finally:
        shutil.rmtree(lay.data_dir, ignore_errors=True)


@pytest.fixture
async def base_barman(based: Based, source: Source) -> AsyncIterator[Barman]:
    async with Barman(based.layout) as b:
        await b.ensure([based.config])
        yield b
    assert processes_under(based.layout.data_dir) == []
