"""A servicehost whose PostgreSQL is a new cluster (restored after a loss, or
re-initialised: another system identifier), against real PostgreSQL 15 and
Barman 3.4. Barman refuses to go on with the old server's history (its
check fails "systemid coherence"); backupd starts a new Barman server for
the new cluster, says so, takes and proves a base backup of it, and keeps
the old server's base backups recoverable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from roost.backups.barman import Barman, advance, generation_name, parse_check
from roost.backups.clusters import Clusters
from roost.backups.layout import Layout
from roost.backups.sources import Where
from roost.wire.messages import BackupEvent, PgSource
from tests.backups.pgsource import Source, pg_source
from tests.conftest import processes_under


def test_advance_starts_a_generation_only_on_another_identifier() -> None:
    first = advance([], "SH1", "7001")
    assert first == [("sh1", "7001")]
    assert advance(first, "SH1", "7001") == first
    assert advance(first, "SH1", "") == first  # not reachable: nothing changes
    assert advance([("sh1", "")], "SH1", "7001") == first  # asked for the first time
    second = advance(first, "SH1", "7002")
    assert second == [("sh1", "7001"), ("sh1-g2", "7002")]
    assert advance(second, "SH1", "7003")[-1] == (generation_name("SH1", 3), "7003")
    assert generation_name("SH1", 3) == "sh1-g3"


@dataclass
class OneHost:
    """What backupd's Pullers say of one servicehost (its cluster, an app's
    database in it) and the events it would send the controllers."""

    source: PgSource
    events: list[BackupEvent] = field(default_factory=list)

    def clusters(self) -> dict[str, tuple[Any, PgSource]]:
        return {"sh1": (None, self.source)}

    def where(self, app: str) -> Where | None:
        return Where("sh1", None, postgres=self.source, database="app")  # type: ignore[arg-type]

    async def report(self, event: BackupEvent) -> None:
        self.events.append(event)


def _systemid(src: Source) -> str:
    [(sid,)] = src.sql("SELECT system_identifier FROM pg_control_system()")
    return str(sid)


async def test_a_new_cluster_gets_a_new_barman_server(layout: Layout) -> None:
    with pg_source() as old:
        old_id = _systemid(old)
        host = OneHost(old.pg)
        async with Barman(layout) as barman:
            clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
            first = await clusters.stage("sh1", layout.root, "capture")
            assert first.facts["server"] == "sh1"
            assert await clusters.check(SimpleNamespace(facts=first.facts)) == []
    with pg_source() as new:  # the servicehost's cluster, made anew
        new_id = _systemid(new)
        assert new_id != old_id
        host.source = new.pg
        async with Barman(layout) as barman:
            clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
            await clusters.ensure()
            # What Barman 3.4 does with the old server against the new cluster.
            out = await barman.run("-f", "json", "check", "sh1", ok=True)
            assert any("systemid coherence" in c for c in parse_check(out, "sh1")), out
            assert clusters.generations() == {"sh1": [("sh1", old_id), ("sh1-g2", new_id)]}
            assert barman.servers["sh1"].retired and not barman.servers["sh1-g2"].retired
            assert not barman.receiving("sh1")
            [event] = host.events
            assert event.kind == "pgbase" and "sh1-g2" in event.message and old_id in event.message

            second = await clusters.stage("sh1", layout.root, "capture")
            assert second.facts["server"] == "sh1-g2"
            assert second.paths == [str(Path("barman") / "sh1-g2")]
            assert await clusters.check(SimpleNamespace(facts=second.facts)) == []
            assert await barman.check("sh1-g2") == []
            earliest, latest = await clusters.window("app")
            assert earliest == second.facts["end"] and latest >= earliest
            # The old cluster's base backup is still there, and recoverable.
            assert [b.id for b in await barman.backups("sh1")] == [first.facts["backup_id"]]
            assert await clusters.check(SimpleNamespace(facts=first.facts)) == []
            # A backupd started again knows which cluster is which.
            again = Clusters(barman, host, dict)  # type: ignore[arg-type]
            assert again.current("sh1") == "sh1-g2"
    assert processes_under(layout.data_dir) == []
