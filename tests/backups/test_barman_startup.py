"""A base backup asked for the moment Barman starts (backupd just started,
its server holding WAL from before), against real PostgreSQL 15 and Barman
3.4: `barman backup` refuses it ("Impossible to start the backup": its
'replication slot' and 'receive-wal running' checks) until receive-wal
streams, so backupd waits for streaming first, and says so when it never
comes up."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from roost.backups.barman import Barman, BarmanError, ServerConfig
from roost.backups.clusters import Clusters
from roost.backups.layout import Layout
from roost.wire.messages import PgSource
from tests.backups.pgsource import Source
from tests.conftest import processes_under


class OneHost(SimpleNamespace):
    source: PgSource

    def clusters(self) -> dict[str, tuple[Any, PgSource]]:
        return {"sh1": (None, self.source)}

    def names(self) -> dict[str, list[str]]:
        return {}  # its key's name is its id

    async def report(self, event: Any) -> None:
        raise AssertionError(f"nothing to report: {event}")


async def test_a_base_backup_right_after_start_waits_for_streaming(
    source: Source, layout: Layout
) -> None:
    host = OneHost(source=source.pg)
    async with Barman(layout) as barman:  # the first: WAL archived from now on
        clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
        first = await clusters.stage("sh1", layout.root, "capture")
    async with Barman(layout) as barman:  # backupd started again
        clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
        second = await clusters.stage("sh1", layout.root, "capture")
    assert second.facts["backup_id"] != first.facts["backup_id"]
    assert processes_under(layout.data_dir) == []


async def test_streaming_that_never_comes_up_is_said(layout: Layout) -> None:
    down = PgSource(host="127.0.0.1", port=1, user="roost_backup", password="x")
    async with Barman(layout) as barman:
        await barman.ensure([ServerConfig("sh1", down)])
        with pytest.raises(BarmanError) as err:
            await barman.streaming("sh1", within=0)
    said = str(err.value)
    assert said.startswith("sh1: WAL streaming was not up within 0s, so no base backup was started")
    assert "receive wal running: " in said and "postgresql" in said
    assert "receive-wal is not running" in said or "receive-wal runs" in said
    assert processes_under(layout.data_dir) == []
