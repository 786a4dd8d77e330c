"""A whole platform from its repository: what is chosen from which snapshots
(pure), which data directories are refused, and a snapshot whose bytes are
not what its facts say failing the restore with a clear error, against a
real restic repository, leaving the data directory as it was."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from roost.backups import drill
from roost.backups import platformrestore as pr
from roost.backups.layout import Layout
from roost.backups.locations import local_location, parse_host_key_pin, parse_location, pin_host_key
from roost.backups.restic import Repo, Snapshot
from roost.cli.restore import restore_platform
from roost.servicehost.rebuild import fresh_state
from roost.settings import Settings
from tests.backups.restictemplate import Templates
from tests.backups.sshd import keygen, sftp_server

T0 = 1_760_000_000.0


@pytest.fixture
def tmp_path(disk_path: Path) -> Path:
    """The repositories and trees on the package's tmpfs (conftest's disk)."""
    return disk_path


def snap(sid: str, kind: str, app: str = "", at: float = T0, backup_id: str = "") -> Snapshot:
    stamp = datetime.fromtimestamp(at, UTC)
    token = hashlib.sha256(sid.encode()).hexdigest()[:6]
    bid = backup_id or f"{kind[:8]}-{stamp.strftime('%Y%m%dT%H%M%SZ')}-{token}"
    tags = (*((f"app={app}",) if app else ()), f"kind={kind}", f"id={bid}")
    return Snapshot(id=sid, time=stamp, tags=tags, paths=("/x",))


def test_refuses_a_data_directory_that_holds_anything() -> None:
    assert pr.refusal(Path("/d"), []) is None
    assert pr.refusal(Path("/d"), ["lost+found"]) is None
    why = pr.refusal(Path("/d"), ["state.db", "keys", "lost+found"])
    assert why is not None
    assert "/d is not empty (keys, state.db)" in why and "nothing was changed" in why


def test_only_tagged_backups_are_found_oldest_first() -> None:
    found = pr.found_in(
        [
            snap("bbbbbb", "data", "shop", T0 + 10),
            Snapshot(id="cccccc", time=datetime.fromtimestamp(T0, UTC), tags=(), paths=()),
            snap("aaaaaa", "platform", at=T0),
            snap("dddddd", "redis", "shop", T0, backup_id="not-an-id"),
        ]
    )
    assert [(f.snapshot, f.kind, f.app) for f in found] == [
        ("aaaaaa", "platform", ""),
        ("bbbbbb", "data", "shop"),
    ]


def test_the_newest_platform_and_the_newest_of_each_apps_kind_are_chosen() -> None:
    found = pr.found_in(
        [
            snap("p1aaaa", "platform", at=T0),
            snap("p2aaaa", "platform", at=T0 + 100),
            snap("d1aaaa", "pgdump", "shop", T0 + 5),
            snap("d2aaaa", "pgdump", "shop", T0 + 50),
            snap("r1aaaa", "redis", "shop", T0 + 200),  # newer than the platform: still chosen
            snap("b1aaaa", "pgbase", at=T0 + 300),  # the lost cluster's: never
            snap("g1aaaa", "git", "blog", T0 + 1),
        ]
    )
    choice = pr.choose(found)
    assert choice.platform.snapshot == "p2aaaa"
    assert {k: f.snapshot for k, f in choice.newest.items()} == {
        ("shop", "pgdump"): "d2aaaa",
        ("shop", "redis"): "r1aaaa",
        ("blog", "git"): "g1aaaa",
    }


def test_without_a_platform_backup_there_is_nothing_to_restore() -> None:
    with pytest.raises(pr.RestoreError, match="no platform backup"):
        pr.choose(pr.found_in([snap("d1aaaa", "pgdump", "shop")]))


def test_only_what_the_platform_still_holds_comes_back_and_the_rest_is_said() -> None:
    choice = pr.choose(
        pr.found_in(
            [
                snap("p1aaaa", "platform"),
                snap("d1aaaa", "pgdump", "shop"),
                snap("r1aaaa", "redis", "shop"),  # its Redis was removed since
                snap("f1aaaa", "data", "shop"),
                snap("d2aaaa", "pgdump", "gone"),  # the app was deleted since
            ]
        )
    )
    plan = pr.settle(
        choice,
        apps=["shop", "blog"],
        services=[("shop", "postgres"), ("blog", "redis")],
    )
    assert {app: sorted(k) for app, k in plan.apps.items()} == {"shop": ["data", "pgdump"]}
    assert [f.snapshot for f in plan.chosen()] == ["p1aaaa", "f1aaaa", "d1aaaa"]
    notes = "\n".join(plan.notes)
    assert "gone is not an app of this platform" in notes
    assert "shop has no redis now" in notes
    assert "blog: no backup of its redis: it comes back empty" in notes


def test_a_platform_snapshot_one_machine_cannot_take_is_refused() -> None:
    ok = {"state.sqlite": "x", "keys/fernet.key": "y", "servicehosts/servicehost.json": "z"}
    assert pr.platform_problems(ok) == []
    cluster = {"state.pgdump": "x", "keys/fernet.key": "y"}
    assert "pg_restore into the cluster's state database" in pr.platform_problems(cluster)[0]
    two = {**ok, "servicehosts/other.json": "w"}
    assert "2 servicehosts" in pr.platform_problems(two)[0]
    assert "no keys/fernet.key" in pr.platform_problems({"state.sqlite": "x"})[0]


def test_records_rebuilt_from_the_repository_say_what_was_proven() -> None:
    f = pr.found_in([snap("d1aaaa", "pgdump", "shop")])[0]
    proven = pr.record_of(f, {"database": "shop_db", "tables": {}}, T0 + 60)
    assert proven.entry.state == "verified" and proven.entry.verified_at == T0 + 60
    assert proven.database == "shop_db" and proven.snapshots == {"local": "d1aaaa"}
    other = pr.record_of(f, {"database": "shop_db"}, 0.0)
    assert other.entry.state == "taken"  # backupd drills it again


def test_a_changed_file_fails_its_check(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("as taken")
    facts = {"manifest": drill.manifest(tmp_path / "data")}
    assert pr.check("data", facts, tmp_path) == []
    (tmp_path / "data" / "a.txt").write_text("changed")
    assert pr.check("data", facts, tmp_path) == ["1 differ: a.txt"]


def test_a_restored_servicehost_state_asks_for_a_fresh_cluster() -> None:
    raw = json.dumps(
        {
            "postgres": {"port": 5499, "password": "pw", "initialized": True},
            "services": {},
            "restores": {"postgres/shop/abc": {"id": "abc", "app": "shop", "kind": "postgres",
                                               "step": "swapped", "at": T0}},
        }
    ).encode()  # fmt: skip
    state = fresh_state(raw)
    assert state.postgres is not None
    assert (state.postgres.port, state.postgres.password) == (5499, "pw")
    assert not state.postgres.initialized and state.restores == {}


# ---------------------------------------------------------------- against restic


def _state_copy(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE apps (id INTEGER, name TEXT, created_at REAL)")


def _repo_with_platform(base: Path, tamper: bool, templates: Templates) -> tuple[Path, Path]:
    """A repository holding one platform backup (the facts of its files are
    taken, then a file changes when `tamper`); (its directory, its password)."""
    layout = Layout(base / "backupd-data")
    layout.create()
    repo = templates.local_repo(layout)
    staging = base / "staging"
    root = staging / "platform"
    (root / "keys").mkdir(parents=True)
    _state_copy(root / "state.sqlite")
    (root / "keys" / "fernet.key").write_text("key\n")
    facts = {"files": drill.file_hashes(root), "schema_version": "0013"}
    if tamper:
        (root / "keys" / "fernet.key").write_text("another key\n")
    (staging / "facts.json").write_text(json.dumps(facts))
    bid = "platform-20260101T000000Z-abcdef"
    asyncio.run(repo.snapshot(staging, tags=["kind=platform", f"id={bid}"]))
    return layout.local_repo, layout.restic_password


def test_a_snapshot_whose_bytes_are_not_its_facts_fails_the_restore_and_changes_nothing(
    tmp_path: Path, restic_templates: Templates
) -> None:
    source, password = _repo_with_platform(tmp_path / "a", tamper=True, templates=restic_templates)
    data = tmp_path / "b"
    with pytest.raises(pr.RestoreError) as exc:
        asyncio.run(restore_platform(data, Settings(), str(source), password))
    message = str(exc.value)
    assert "platform-20260101T000000Z-abcdef (platform of the platform)" in message
    assert "does not match what was taken: 1 differ: keys/fernet.key" in message
    assert not data.exists()  # made by the restore, so gone with it


def test_a_data_directory_with_a_platform_is_refused_untouched(
    tmp_path: Path, restic_templates: Templates
) -> None:
    source, password = _repo_with_platform(tmp_path / "a", tamper=False, templates=restic_templates)
    data = tmp_path / "b"
    data.mkdir()
    (data / "state.db").write_text("a platform's")
    with pytest.raises(pr.RestoreError, match="is not empty"):
        asyncio.run(restore_platform(data, Settings(), str(source), password))
    assert [p.name for p in data.iterdir()] == ["state.db"]
    assert (data / "state.db").read_text() == "a platform's"


def test_an_empty_data_directory_left_as_found_after_a_failure(
    tmp_path: Path, restic_templates: Templates
) -> None:
    source, _ = _repo_with_platform(tmp_path / "a", tamper=False, templates=restic_templates)
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not the password\n")
    data = tmp_path / "b"
    data.mkdir()
    with pytest.raises(pr.RestoreError, match="does not open with backupd's password"):
        asyncio.run(restore_platform(data, Settings(), str(source), wrong))
    assert list(data.iterdir()) == []
    shutil.rmtree(data)


def test_a_repository_over_sftp_becomes_the_local_one_with_its_key_and_pin(
    tmp_path: Path, restic_templates: Templates
) -> None:
    """The offsite copy is what survives a lost machine: read over SFTP with
    the key its host authorises and its pinned host key, both kept."""
    _, password = _repo_with_platform(tmp_path / "a", tamper=False, templates=restic_templates)
    a = Layout(tmp_path / "a" / "backupd-data")
    a_local = Repo(local_location(a), a, min_free_bytes=1 << 20)
    key = tmp_path / "id_ed25519"
    with sftp_server() as sshd:
        sshd.authorize(keygen(key))
        where = f"sftp://root@{sshd.host}:{sshd.port}//repos/roost"
        restic_templates.offsite_at(sshd.on_disk("/repos/roost"))  # initialised, empty

        async def scenario() -> list[pr.Found]:
            offsite = Repo(parse_location("offsite", where, setting="S"), a, min_free_bytes=1 << 20)
            a.ssh_key.write_bytes(key.read_bytes())
            a.ssh_key.chmod(0o600)
            await pin_host_key(
                offsite.location, a, parse_host_key_pin(sshd.host_key_pub, setting="S"), setting="S"
            )
            await a_local.copy(offsite, [s.id for s in await a_local.snapshots()])
            b = Layout(tmp_path / "b")
            with pytest.raises(pr.RestoreError, match="needs --ssh-key and --host-key"):
                await pr.open_source(where, b, password, None, "")
            source = await pr.open_source(where, b, password, key, sshd.host_key_pub)
            local, ids = await pr.adopt(source, b)
            assert b.ssh_key.read_bytes() == key.read_bytes()
            assert local.location.local_dir == b.local_repo and len(ids) == 1
            return pr.found_in(await local.snapshots())

        found = asyncio.run(scenario())
    assert [(f.kind, f.backup_id) for f in found] == [
        ("platform", "platform-20260101T000000Z-abcdef")
    ]
