"""Two backupds (two locations), each with its own local repository and its
own history, both pulling from one servicehost (tests/cluster/backups.py
with bak1 and bak2, no offsite host): each streams the cluster's WAL through
a replication slot of its own and holds a verified dump and base backup of
the app. Then bak2's host dies (its processes killed, its network silent):
captures and a release still go on (bak1 takes them; bak2's failure is a
platform event), `roost backups list` shows bak2 as unreachable, and a
restore from bak1 brings the data back.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.backups import BackupCluster, sql
from tests.cluster.cluster import wait_for
from tests.helloapp import hello_app

pytestmark = pytest.mark.cluster

DRILL_S = 300  # two backupds drill at once on a shared machine


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[BackupCluster]:
    c = BackupCluster(Path(tempfile.mkdtemp(prefix="roost-two-backupds-")), 2, offsite=False)
    with c:
        c.wait_ready()
        yield c
    assert not c.leftovers(), f"left behind: {c.leftovers()}"


def captured(rc: BackupCluster, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(rc.cli("backups", "capture", *args, "--json").stdout)["entries"])


def settled(rc: BackupCluster, e: dict[str, Any]) -> str:
    """The state of `e` (on its backupd) once its drill has ruled."""

    def state() -> str:
        held = rc.entries(e["app"]) if e["app"] else rc.api("GET", "/api/backups")["entries"]
        (got,) = [x for x in held if (x["id"], x["backupd"]) == (e["id"], e["backupd"])]
        return "" if got["state"] == "taken" else str(got["state"])

    return str(wait_for(state, DRILL_S, f"the drill of {e['id']} on {e['backupd']}", interval=1))


def test_two_backupds_pull_on_their_own_and_one_carries_on_alone(rc: BackupCluster) -> None:
    bak1, bak2 = (h.ip for h in rc.backupds)
    url = rc.app_with_postgres("twice")
    sql(url, "CREATE TABLE notes (body text)")
    sql(url, "INSERT INTO notes VALUES ('kept')")

    # Both capture, each into its own repository, and prove it by restoring it.
    dumps = captured(rc, "twice", "--kind", "pgdump")
    assert sorted(e["backupd"] for e in dumps) == [bak1, bak2], dumps
    bases = [e for e in captured(rc, "--platform") if e["kind"] == "pgbase"]
    assert sorted(e["backupd"] for e in bases) == [bak1, bak2], bases
    for e in dumps + bases:
        assert settled(rc, e) == "verified", e

    # Each streams WAL through a slot of its own (named after it), both at once
    # (waited for: a receive-wal restarted by its supervisor is a moment away).
    def streaming() -> bool:
        q = "SELECT slot_name FROM pg_replication_slots WHERE active"
        slots = rc.superuser_sql("postgres", q)
        return all(
            len([s for s in slots if f"_{ip.replace('.', '_')}_" in s]) == 1 for ip in (bak1, bak2)
        )

    wait_for(streaming, 60, "both backupds streaming through their own slots", interval=1)

    rc.power_off(rc.backupds[1])

    # A capture: bak1 takes it; bak2's failure is said, not hidden.
    (dump,) = captured(rc, "twice", "--kind", "pgdump")
    assert dump["backupd"] == bak1 and dump["state"] == "taken", dump
    listing = rc.listing("twice")
    assert listing["backupds"][bak1] == "ok"
    assert listing["backupds"][bak2].startswith("unreachable"), listing["backupds"]
    assert {e["backupd"] for e in listing["entries"]} == {bak1}
    assert f"backupd {bak2}: unreachable" in rc.cli("backups", "list", "twice").stdout
    failed = [
        e for e in rc.events("twice") if e["kind"] == "backup-failed" and bak2 in e["message"]
    ]
    assert failed, rc.events("twice")

    # A release (its pre-release backup on bak1 alone) goes live.
    work = rc.base / "apps" / "twice"
    hello_app(work, "postgres")
    assert "is live" in rc.cli("deploy", str(work), "--app", "twice").stdout
    pre = [e for e in rc.entries("twice") if e["reason"] == "pre-release"]
    assert [(e["kind"], e["backupd"]) for e in pre] == [("pgdump", bak1)], pre

    # A restore by id, from the backupd that holds it.
    assert settled(rc, dump) == "verified"
    sql(url, "DROP TABLE notes")
    out = rc.cli("backups", "restore", "twice", "--id", dump["id"], "--yes", "--json").stdout
    assert json.loads(out)["safety_backup"], out
    assert sql(url, "SELECT body FROM notes") == [("kept",)]
