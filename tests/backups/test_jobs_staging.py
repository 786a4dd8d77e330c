"""backupd's jobs staging a backup, against a real restic repository: a
base backup staged in place (Barman's directory) is snapshotted under the
same paths every time, so restic takes the last snapshot as its parent and
does not read the unchanged files again; a database whose source is down is
a failed backup with the reason, reported, not an exception."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.backups.catalog import Catalog, Record
from roost.backups.jobs import Jobs, Repos
from roost.backups.layout import Layout
from roost.backups.sources import Where
from roost.backups.staging import Staged
from roost.settings import Settings
from roost.wire.messages import BackupEvent, PgSource
from tests.backups.restictemplate import Templates
from tests.conftest import free_port


@dataclass
class Sources:
    """What backupd's Pullers say of one servicehost, and the events sent."""

    postgres: PgSource | None = None
    events: list[BackupEvent] = field(default_factory=list)

    def where(self, app: str) -> Where | None:
        return Where("sh1", None, postgres=self.postgres, database=app)  # type: ignore[arg-type]

    async def report(self, event: BackupEvent) -> None:
        self.events.append(event)


async def _no_drill(rec: Record, scratch: Path) -> list[str]:
    raise AssertionError("these tests run no follow-ups")


def _jobs(layout: Layout, templates: Templates, sources: Sources) -> Jobs:
    repo = templates.local_repo(layout)
    return Jobs(layout, Settings(), Catalog(layout.catalog), sources, Repos(repo), _no_drill)  # type: ignore[arg-type]


async def test_a_second_base_backup_reads_only_what_changed(
    layout: Layout, restic_templates: Templates, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = _jobs(layout, restic_templates, Sources())
    server = layout.barman / "sh1"
    for i in range(20):  # Barman's base backups and WAL, as far as restic sees
        (server / "wals" / f"{i:04d}").mkdir(parents=True)
        (server / "wals" / f"{i:04d}" / "segment").write_bytes(bytes([i]) * 50_000)
    (layout.barman / "generations.json").write_text('{"sh1": [["sh1", "7001"]]}')
    (layout.barman / "slots.json").write_text('{"sh1": "barman_sh1"}')

    async def in_place(host: str, staging: Path, reason: str) -> Staged:
        # As clusters.stage stages one: in place under DATA/backupd.
        return Staged(layout.root, {"server": "sh1"}, host,
                      paths=["barman/sh1", "barman/generations.json", "barman/slots.json"],
                      facts_path="barman/sh1.facts.json")  # fmt: skip

    jobs.stager.pgbase = in_place
    caplog.set_level(logging.INFO, logger="roost.backups")
    first = await jobs.backup("pgbase", "", "scheduled", host="sh1")
    second = await jobs.backup("pgbase", "", "scheduled", host="sh1")
    assert first.entry.state == second.entry.state == "taken"
    snaps = {s.id: s for s in await jobs.repos.local.snapshots(["kind=pgbase"])}
    assert snaps[second.snapshots["local"]].parent == first.snapshots["local"]
    # restic's summary of the second: the 22 files (the facts aside) unchanged.
    [said] = [r.getMessage() for r in caplog.records if second.id in r.getMessage()]
    assert re.search(r"; 22 files unchanged, \d+ bytes added\)$", said), said
    # The facts, generations.json and slots.json are in the snapshot; nothing
    # is left behind.
    facts = await jobs.repos.local.dump(second.snapshots["local"], "/barman/sh1.facts.json")
    assert facts == b'{"server": "sh1"}'
    gens = await jobs.repos.local.dump(second.snapshots["local"], "/barman/generations.json")
    assert gens == b'{"sh1": [["sh1", "7001"]]}'
    slots = await jobs.repos.local.dump(second.snapshots["local"], "/barman/slots.json")
    assert slots == b'{"sh1": "barman_sh1"}'
    assert not (layout.barman / "sh1.facts.json").exists()
    assert list(layout.staging.iterdir()) == []


async def test_a_dump_from_a_source_that_is_down_is_a_failed_backup(
    layout: Layout, restic_templates: Templates
) -> None:
    # A PostgreSQL that is stopped: nothing listens on its port.
    down = PgSource(host="127.0.0.1", port=free_port(), user="roost_backup", password="x")
    sources = Sources(down)
    jobs = _jobs(layout, restic_templates, sources)
    rec = await jobs.backup("pgdump", "shop", "scheduled")
    assert rec.entry.state == "failed"
    assert rec.entry.message.startswith("not taken: shop's database could not be dumped: ")
    assert "Connection refused" in rec.entry.message or "connect" in rec.entry.message
    assert jobs.catalog.get(rec.id).entry.state == "failed"
    [event] = sources.events
    assert not event.ok and event.app == "shop" and event.kind == "pgdump"
    assert rec.entry.message in event.message
    assert list(layout.staging.iterdir()) == []
    assert await jobs.repos.local.snapshots() == []
