"""A servicehost whose PostgreSQL is a new cluster (restored after a loss, or
re-initialised: another system identifier), against real PostgreSQL 15 and
Barman 3.4. Barman refuses to go on with the old server's history (its
check fails "systemid coherence"); backupd starts a new Barman server for
the new cluster, says so, takes and proves a base backup of it, and keeps
the old server's base backups recoverable: the window spans both
generations, a time in the old one's is recovered from the old server, and
a time between the two is refused naming both windows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from roost.backups import pitr
from roost.backups.barman import Barman, Window, advance, generation_name, parse_check
from roost.backups.barmanconf import own_slot_name, slot_name
from roost.backups.clusters import Clusters
from roost.backups.layout import Layout
from roost.backups.restore import RestoreRefused
from roost.backups.slots import OwnSlotBarman
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


T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_a_time_is_recovered_from_the_generation_whose_window_holds_it() -> None:
    # sh1 ran from 0 to 60 (base backup ended at 10), then was lost; its new
    # cluster sh1-g2 has a base backup that ended at 90 and WAL up to 120.
    gens = [("sh1", Window(_at(10), _at(60))), ("sh1-g2", Window(_at(90), _at(120)))]
    assert pitr.generation_for(gens, _at(10)) == "sh1"
    assert pitr.generation_for(gens, _at(59.9)) == "sh1"
    assert pitr.generation_for(gens, _at(90)) == "sh1-g2"
    assert pitr.generation_for(gens, _at(119)) == "sh1-g2"
    assert pitr.union(gens) == Window(_at(10), _at(120))
    for outside in (_at(5), _at(60), _at(75), _at(120), _at(200)):
        with pytest.raises(pitr.OutsideWindow) as err:
            pitr.generation_for(gens, outside)
        assert str(err.value) == (
            f"{outside.isoformat()} is outside the point-in-time windows of the cluster's "
            "generations (sh1: 2026-12-01T03:10:00.000000+00:00 to 2026-12-01T04:00:00.000000"
            "+00:00; sh1-g2: 2026-12-01T04:30:00.000000+00:00 to 2026-12-01T05:00:00.000000"
            "+00:00)"
        )
    # Should two overlap, the newer cluster's holds the time.
    overlapping = [("sh1", Window(_at(10), _at(100))), *gens[1:]]
    assert pitr.generation_for(overlapping, _at(95)) == "sh1-g2"
    # A new cluster without a complete base backup yet: only the old window.
    waiting = [gens[0], ("sh1-g2", None)]
    assert pitr.union(waiting) == gens[0][1]
    with pytest.raises(pitr.OutsideWindow, match="sh1-g2: no complete base backup"):
        pitr.generation_for(waiting, _at(100))
    assert pitr.union([("sh1", None)]) is None
    with pytest.raises(pitr.OutsideWindow, match="of sh1: there is no complete base backup"):
        pitr.generation_for([("sh1", None)], _at(0))


@dataclass
class OneHost:
    """What backupd's Pullers say of one servicehost (its cluster, an app's
    database in it) and the events it would send the controllers."""

    source: PgSource
    events: list[BackupEvent] = field(default_factory=list)
    id: str = "sh1"
    # key name -> ids answering by it (Pullers.names): {} when its name is its id
    old: dict[str, list[str]] = field(default_factory=dict)

    def clusters(self) -> dict[str, tuple[Any, PgSource]]:
        return {self.id: (None, self.source)}

    def where(self, app: str) -> Where | None:
        return Where(self.id, None, postgres=self.source, database="app")  # type: ignore[arg-type]

    def names(self) -> dict[str, list[str]]:
        return self.old

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
            # The app's rows at t_old, one more after it, all held by Barman.
            old.sql("CREATE DATABASE app")
            old.sql("CREATE TABLE t (id int PRIMARY KEY, v text)", "app")
            old.sql("INSERT INTO t VALUES (1, 'old'), (2, 'old')", "app")
            [(t_old,)] = old.sql("SELECT clock_timestamp()")
            old.sql("INSERT INTO t VALUES (3, 'after t_old')", "app")
            await barman.mark("sh1")  # (the window's own mark has seconds only)
            _, old_latest = await clusters.window("app")
            assert old_latest > t_old.timestamp()
    with pg_source() as new:  # the servicehost's cluster, made anew
        new_id = _systemid(new)
        assert new_id != old_id
        host.source = new.pg
        # (backupd's own slots from here on, as the daemon streams: slots.py)
        async with OwnSlotBarman(layout, backupd="bak1") as barman:
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
            # The same paths every time (restic's parent), generations.json
            # and slots.json with them.
            assert second.paths == [
                "barman/sh1-g2",
                "barman/generations.json",
                "barman/slots.json",
            ]
            slots = json.loads((layout.barman / "slots.json").read_text())
            assert slots == {"sh1": slot_name("sh1"), "sh1-g2": own_slot_name("bak1", "sh1-g2")}
            assert second.facts_path == "barman/sh1-g2.facts.json"
            assert await clusters.check(SimpleNamespace(facts=second.facts)) == []
            assert await barman.check("sh1-g2") == []
            # The window spans both generations.
            earliest, latest = await clusters.window("app")
            assert earliest == first.facts["end"] and latest >= second.facts["end"]
            [(_, old_window), (_, new_window)] = await pitr.generation_windows(
                barman, ["sh1", "sh1-g2"]
            )
            assert old_window is not None and new_window is not None
            assert old_window.latest.timestamp() >= old_latest
            assert new_window.earliest.timestamp() == second.facts["end"]
            # Between the two: refused, naming both windows, nothing made.
            gap = old_window.latest + (new_window.earliest - old_window.latest) / 2
            with pytest.raises(RestoreRefused, match=r"windows of the cluster's generations "
                               r"\(sh1: 20.*; sh1-g2: 20.*\); nothing was changed"):  # fmt: skip
                await clusters.recover("app", "app", gap, layout.root / "gap")
            assert not (layout.root / "gap" / "db.dump").exists()
            assert list(layout.scratch.iterdir()) == []
            # Before the change: recovered from the old, retired server.
            then = await clusters.recover("app", "app", t_old, layout.root / "then")
            assert then.facts.tables["public.t"].rows == 2
            # The old cluster's base backup is still there, and recoverable.
            assert [b.id for b in await barman.backups("sh1")] == [first.facts["backup_id"]]
            assert await clusters.check(SimpleNamespace(facts=first.facts)) == []
            # A backupd started again knows which cluster is which.
            again = Clusters(barman, host, dict)  # type: ignore[arg-type]
            assert again.current("sh1") == "sh1-g2"
    assert processes_under(layout.data_dir) == []


async def test_a_cluster_recorded_under_the_key_name_goes_on_under_the_hosts_id(
    layout: Layout,
) -> None:
    """An older backupd named the servicehost by its key's name; named by its
    id now, it keeps the Barman server and the slot it streams through (a new
    one would leave the old slot holding WAL on the servicehost for ever)."""
    with pg_source() as src:
        sid = _systemid(src)
        host = OneHost(src.pg, id="servicehost")
        async with OwnSlotBarman(layout, backupd="bak1") as barman:
            clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
            first = await clusters.stage("servicehost", layout.root, "capture")
            slot = barman.slot("servicehost")
        host.id, host.old = "10.0.0.2", {"servicehost": ["10.0.0.2"]}
        async with OwnSlotBarman(layout, backupd="bak1") as barman:
            clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
            await clusters.ensure()
            assert clusters.generations() == {"10.0.0.2": [("servicehost", sid)]}
            assert list(barman.servers) == ["servicehost"]
            assert not barman.servers["servicehost"].retired
            assert barman.slot("servicehost") == slot and host.events == []
            second = await clusters.stage("10.0.0.2", layout.root, "capture")
            assert second.facts["server"] == "servicehost"
            assert second.facts["end"] >= first.facts["end"]
            assert await clusters.check(SimpleNamespace(facts=second.facts)) == []
