"""Fixtures for backupd's PostgreSQL side (pgfacts, scratch, barman, pitr).

`layout`: backupd's directories under /tmp (the scratch user must walk down
to them: pytest's own tmp_path is root's alone); `source`: a PostgreSQL 15
source (tests/backups/pgsource.py) with a database `app` holding an empty
table `t`; `barman`: Barman streaming that source, nothing left running
after it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from roost.backups.barman import Barman, ServerConfig
from roost.backups.layout import Layout
from tests.backups.pgsource import Source, pg_source
from tests.conftest import processes_under


@pytest.fixture
def layout() -> Iterator[Layout]:
    data = Path(tempfile.mkdtemp(prefix="roost-bk-"))
    lay = Layout(data)
    lay.create()
    yield lay
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def source() -> Iterator[Source]:
    with pg_source() as src:
        src.sql("CREATE DATABASE app")
        src.sql("CREATE TABLE t (id int PRIMARY KEY, v text)", "app")
        yield src


@pytest.fixture
async def barman(source: Source, layout: Layout) -> AsyncIterator[Barman]:
    async with Barman(layout) as b:
        await b.ensure([ServerConfig("sh1", source.pg, immediate_checkpoint=True)])
        yield b
    assert processes_under(layout.data_dir) == []
