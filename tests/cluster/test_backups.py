"""Backups on a cluster of network-namespace hosts (tests/cluster/backups.py):
a controller, a runner, a router, the builder, a servicehost (svc1), a backup
host (bak1: `roost backupd`, real Barman, restic and PostgreSQL tools) and the
offsite location (off1: OpenSSH serving SFTP only, reached by backupd with
its own key). Everything is driven as a user or an operator would: the CLI
and the API, and the app's own database credentials.

One cluster serves the module. backupd runs with its schedule off, so that
only the backups a test asks for are taken; the retention test, last, turns
the schedule on (that is when backupd applies its policies).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from roost.backups.catalog import Catalog, new_id
from roost.backups.layout import Layout
from roost.backups.locations import parse_location, ssh_argv
from tests.backups.sshd import keygen
from tests.cluster.backups import BackupCluster, sql
from tests.cluster.cluster import wait_for
from tests.helloapp import hello_app

pytestmark = pytest.mark.cluster

DRILL_S = 180  # a drill restores into a scratch server: seconds, but the machine is shared


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[BackupCluster]:
    c = BackupCluster(Path(tempfile.mkdtemp(prefix="roost-backups-")))
    with c:  # started; on the way out, stopped and removed
        c.wait_ready()
        yield c
    assert not c.leftovers(), f"left behind: {c.leftovers()}"


def entry(rc: BackupCluster, app: str, backup_id: str) -> dict[str, Any]:
    return next(e for e in rc.entries(app) if e["id"] == backup_id)


def settled(rc: BackupCluster, app: str, backup_id: str) -> dict[str, Any]:
    """The entry once its drill has ruled (verified or failed)."""
    return wait_for(
        lambda: (e := entry(rc, app, backup_id))["state"] != "taken" and e,
        DRILL_S,
        f"the drill of {backup_id}",
        interval=0.5,
    )


def capture(rc: BackupCluster, app: str, *kinds: str) -> list[dict[str, Any]]:
    args = [a for k in kinds for a in ("--kind", k)]
    out = rc.cli("backups", "capture", app, *args, "--json").stdout
    return list(json.loads(out)["entries"])


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- point in time


def test_point_in_time_restore_through_the_platform(rc: BackupCluster) -> None:
    url = rc.app_with_postgres("pitr")
    # A base backup to recover from; WAL streams to bak1 from then on.
    base = json.loads(rc.cli("backups", "capture", "--platform", "--json").stdout)
    assert "pgbase" in {e["kind"] for e in base["entries"]}

    sql(url, "CREATE TABLE notes (id serial PRIMARY KEY, body text)")
    sql(url, "INSERT INTO notes (body) VALUES ('t1 a'), ('t1 b')")
    sql(url, "INSERT INTO notes (body) VALUES ('t2')")
    # t2: the first whole second after t2's commit (read after it, so later).
    ((after_commit,),) = sql(url, "SELECT now()")
    t2 = after_commit.replace(microsecond=0) + timedelta(seconds=1)
    wait_for(lambda: sql(url, "SELECT now()")[0][0] > t2 + timedelta(seconds=0.5), 10, "t2 past")
    # What a user sees before choosing a time: the window reaches t2.
    wait_for(lambda: rc.listing("pitr")["pitr"]["to"] > t2.timestamp(), 60, "the window at t2")
    sql(url, "INSERT INTO notes (body) VALUES ('t3')")
    sql(url, "DROP TABLE notes")  # t3: the mistake

    out = rc.cli("backups", "restore", "pitr", "--at", iso(t2), "--yes", "--json").stdout
    done = json.loads(out)
    assert f"restored from {iso(t2)}" in done["message"], done
    # Exactly t1's and t2's rows, through the app's own role and database.
    rows = sql(url, "SELECT body FROM notes ORDER BY id")
    assert [r[0] for r in rows] == ["t1 a", "t1 b", "t2"]
    # The database it replaced is kept, as the reply says: as it was at t3.
    assert done["kept"], done
    assert rc.superuser_sql(done["kept"], "SELECT to_regclass('notes') IS NULL") == ["t"]
    # A backup of that was taken first, and the app serves again.
    assert entry(rc, "pitr", done["safety_backup"])["reason"] == "before restore"
    assert not json.loads(rc.cli("apps", "info", "pitr", "--json").stdout)["suspended"]


# ---------------------------------------------------------------- a corrupted backup


def data_packs(rc: BackupCluster) -> set[Path]:
    """The local repository's packs of file contents (restic keeps the packs
    of trees, the other kind, in its cache as well)."""
    repo = rc.bak.data / "backupd" / "repo" / "data"
    cached = {p.name for p in (rc.bak.data / "backupd" / "cache").rglob("data/*/*")}
    return {p for p in repo.glob("*/*") if p.name not in cached}


def flip(pack: Path) -> None:
    """Invert a byte every 64 KiB (again: as it was). Every blob of a database
    dump (restic cuts files into chunks of 512 KiB or more) is hit."""
    with open(pack, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        for offset in range(0, max(size - 1024, 1), 64 * 1024):
            fh.seek(offset)
            byte = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([byte[0] ^ 0xFF]))


def test_a_corrupted_backup_fails_its_drill_and_is_reported(rc: BackupCluster) -> None:
    url = rc.app_with_postgres("broken")
    sql(url, "CREATE TABLE blobs (b bytea)")
    # Incompressible, so the dump is several chunks, all but the first (the
    # dump's header holds its time) shared by every later dump of it. restic
    # cuts chunks of 1 MiB on average at content-defined points: 3 MiB came
    # out as one chunk in about one run in twelve (no cut point past the
    # first 512 KiB), and then the second dump shared nothing damaged. 12 MiB
    # leaves no such chance (and restic's 8 MiB limit forces a cut anyway).
    sql(url, "INSERT INTO blobs VALUES (%s)", os.urandom(12 << 20))
    before = data_packs(rc)
    (first,) = capture(rc, "broken", "pgdump")
    assert settled(rc, "broken", first["id"])["state"] == "verified"  # sound before the damage
    damaged = data_packs(rc) - before
    assert damaged, "the capture wrote no pack"
    for pack in damaged:
        flip(pack)
    try:
        (second,) = capture(rc, "broken", "pgdump")
        got = settled(rc, "broken", second["id"])
        assert got["state"] == "failed" and got["message"].startswith("drill:"), got
        health = rc.listing("broken")["health"]
        assert health["state"] == "failed" and health["red"], health
        assert (
            f"broken: failed (pgdump {second['id']}: drill:"
            in rc.cli("backups", "list", "broken").stdout
        )
        # A platform event, in red on the dashboard.
        events = wait_for(
            lambda: [
                e
                for e in rc.events("broken")
                if e["kind"] == "backup-failed" and second["id"] in e["message"]
            ],
            30,
            "the failed drill's event",
        )
        assert "FAILED" in events[0]["message"]
    finally:
        for pack in damaged:
            flip(pack)
    assert all(e["state"] != "verified" for e in rc.entries("broken") if e["id"] != first["id"])


# ---------------------------------------------------------------- a compromised servicehost


def test_a_servicehost_cannot_delete_from_either_repository(rc: BackupCluster) -> None:
    """What a compromised servicehost (root on svc1) can do: serve wrong or no
    data from then on (its next backups fail their drills or are missing, and
    say so), and read the data it holds anyway. What it cannot: ask backupd
    for anything but a ping (no policy that forgets history, no restore over
    an app, no captures, not even the list), open either repository (no
    restic password, no SSH key on it: backupd pulls, nothing pushes to it),
    or log in to the offsite host with any key it has or makes; and backupd's
    own key there opens an SFTP store and nothing else."""
    rc.app_with_postgres("victim")
    entries_before = [e["id"] for e in rc.entries("victim")]
    policy = rc.bak.data / "backupd" / "policy.json"
    policy_before = policy.read_bytes() if policy.exists() else b""

    # backupd, asked with svc1's own key from svc1: a ping, and nothing else.
    asks = ("ping", "list", "policy", "capture", "restore")
    got = rc.probe(rc.svc, "servicehost", "victim", *asks)
    assert got["ping"] == "Ok", got
    for ask in asks[1:]:
        assert got[ask].startswith("error: refused: a servicehost"), got
    # The same probe with a controller's key, from its host, is answered.
    assert rc.probe(rc.controllers[0], "controller", "victim", "list") == {"list": "BackupList"}
    assert [e["id"] for e in rc.entries("victim")] == entries_before
    assert (policy.read_bytes() if policy.exists() else b"") == policy_before

    # Nothing on svc1 opens a repository: not the password, not an SSH key.
    password = (rc.bak.data / "backupd" / "keys" / "restic.key").read_bytes().strip()
    assert len(password) > 30
    for path, content in files_under(rc.svc.data):
        assert password not in content and b"PRIVATE KEY" not in content, path

    # Offsite, svc1 is refused with its own files as keys and with a key it makes.
    assert rc.offsite is not None
    off = rc.offsite.host.ip
    made = rc.base / "svc1-made-key"
    keygen(made, "svc1")
    tries = [*sorted((rc.svc.data / "keys").iterdir()), made]
    for key in tries:
        r = rc.run_in(
            rc.svc,
            ["ssh", "-F", "none", "-i", str(key), "-o", "IdentitiesOnly=yes",
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
             f"root@{off}", "-s", "sftp"],
        )  # fmt: skip
        assert r.returncode == 255 and "Permission denied" in r.stderr, (key, r.stderr)

    # backupd's key there: SFTP in a chroot holding the repository, no shell,
    # no command, no forwarding.
    layout = Layout(rc.bak.data)
    ssh = ssh_argv(parse_location("offsite", rc.offsite.repository, setting="test"), layout)
    login = ssh[:-2]  # without "-s sftp"
    r = rc.run_in(rc.bak, [*login, "echo pwned; id"])
    assert "pwned" not in r.stdout and "uid=" not in r.stdout, r.stdout + r.stderr
    r = rc.run_in(rc.bak, [*login[:-1], "-W", f"{rc.controllers[0].ip}:8000", login[-1]])
    assert r.returncode != 0 and "prohibited" in r.stderr, r.stderr
    sftp = rc.run_in(
        rc.bak,
        ["sftp", "-b", "-", "-F", "none", "-i", str(layout.ssh_key), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={layout.known_hosts}", f"root@{off}"],
        stdin="ls -1 /\nget /etc/passwd /dev/null\n",
    )  # fmt: skip
    assert sftp.returncode != 0, sftp.stdout  # the get: there is no /etc in the chroot
    listed = [ln for ln in sftp.stdout.splitlines() if not ln.startswith("sftp>")]
    assert listed == ["/repo"], sftp.stdout + sftp.stderr


def files_under(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every regular file's bytes (PostgreSQL's that vanish meanwhile aside)."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                yield path, path.read_bytes()
            except FileNotFoundError:
                continue


# ---------------------------------------------------------------- before a release


def test_the_pre_release_backup_is_taken_before_the_release_goes_live(
    rc: BackupCluster, tmp_path: Path
) -> None:
    app = tmp_path / "shop"
    hello_app(app, "postgres")
    rc.deploy("shop", app)
    pre = [e for e in rc.entries("shop") if e["reason"] == "pre-release"]
    assert [e["kind"] for e in pre] == ["pgdump"], rc.entries("shop")
    live = [e for e in rc.events("shop") if e["kind"] == "deploy" and "v1 is live" in e["message"]]
    assert len(live) == 1, rc.events("shop")
    assert pre[0]["taken_at"] < live[0]["ts"]
    assert settled(rc, "shop", pre[0]["id"])["state"] == "verified"


# ---------------------------------------------------------------- retention (last: schedule on)


def test_retention_prunes_as_the_policy_says(rc: BackupCluster, tmp_path: Path) -> None:
    """Four older backups (copies of a real one, stored with the times of 2 to
    5 days ago), a policy of 2 daily backups and 1 day of point in time: the
    daemon's retention keeps today's and the one of 2 days ago, nothing older."""
    rc.app_with_postgres("keep")
    (real,) = capture(rc, "keep", "pgdump")
    assert settled(rc, "keep", real["id"])["state"] == "verified"
    rc.cli("backups", "policy", "keep", "--pitr-days", "1", "--daily", "2", "--weekly", "0",
           "--monthly", "0")  # fmt: skip
    rc.stop_backupd()  # while its catalog and repository are written here
    layout = Layout(rc.bak.data)
    catalog = Catalog(layout.catalog)
    src = catalog.get(real["id"])
    repo = rc.local_repo()
    restored = tmp_path / "restored"
    asyncio.run(repo.restore(src.snapshots["local"], restored))
    older: dict[int, str] = {}
    for days in (2, 3, 4, 5):
        at = src.entry.taken_at - days * 86400
        backup_id = new_id("pgdump", at)
        tags = ["app=keep", "kind=pgdump", f"id={backup_id}"]
        when = datetime.fromtimestamp(at, UTC)
        snap = asyncio.run(repo.snapshot(restored, tags=tags, time=when)).id
        entry_ = msgspec.structs.replace(
            src.entry, id=backup_id, taken_at=at, verified_at=at, locations={"local": "ok"}
        )
        catalog.put(msgspec.structs.replace(src, entry=entry_, snapshots={"local": snap}))
        older[days] = backup_id
    # The weekly check ran a moment ago; retention never ran, so it is due at once.
    (layout.root / "runs.json").write_text(json.dumps({"check": [time.time(), True]}))

    hour = (datetime.now(UTC).hour + 12) % 24  # the nightly slot far from now
    rc.start_backupd({"ROOST_BACKUP_SCHEDULE": "on", "ROOST_BACKUP_HOUR": str(hour)})
    wait_for(
        lambda: "retention" in json.loads((layout.root / "runs.json").read_text()),
        240,
        "backupd's retention run",
        interval=1,
    )
    kept = {s.tag("id") for s in asyncio.run(repo.snapshots(["app=keep", "kind=pgdump"]))}
    assert kept == {real["id"], older[2]}, (kept, older)
    assert {e["id"] for e in rc.entries("keep")} == kept
