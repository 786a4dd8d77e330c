"""The servicehost's backup side, pure parts: pg_hba, restore names, Redis
config, the snapshot-room plan and the archive checks (no sockets, no servers)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from roost.servicehost.names import (
    BACKUP_ROLE,
    BadName,
    check_restore_id,
    check_target,
    restore_db_name,
)
from roost.servicehost.postgres import hba_address, render_hba
from roost.servicehost.redis import needs_aof_rebuild, render_conf
from roost.servicehost.snaproom import RESUME_MARGIN, Room, plan
from roost.servicehost.state import Service
from roost.servicehost.unpack import BadArchive, check_members, unpack

MiB = 2**20

# ---------------------------------------------------------------- pg_hba


def _rules(text: str) -> list[list[str]]:
    return [ln.split() for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_the_backup_role_logs_in_from_loopback_and_backupd_hosts_only() -> None:
    rules = _rules(render_hba("roost", ["10.0.0.7", "fd00::7", "bak.lan", "0.0.0.0"]))
    sameuser = next(i for i, r in enumerate(rules) if r[1] == "sameuser")
    backup = [(i, r) for i, r in enumerate(rules) if r[2] == BACKUP_ROLE]
    assert all(i < sameuser for i, _ in backup)  # before the apps' line: first match wins
    allowed = {(r[1], r[3]) for _, r in backup if r[4] == "scram-sha-256"}
    sources = {"127.0.0.1/32", "::1/128", "10.0.0.7/32", "fd00::7/128", "bak.lan"}
    assert allowed == {(db, a) for db in ("replication", "all") for a in sources}
    # From anywhere else: rejected, not left to a later line; a wildcard never opens it.
    assert [r for _, r in backup if r[4] == "reject"] == [
        ["host", "all", BACKUP_ROLE, "all", "reject"]
    ]
    assert ["host", "replication", "all", "all", "reject"] in rules
    assert all(r[-1] != "trust" for r in rules)


def test_a_restored_copy_is_opened_by_its_apps_role_only() -> None:
    rules = _rules(render_hba("roost", copies=[("mycopy", "app_shop")]))
    line = ["host", '"mycopy"', '"app_shop"', "all", "scram-sha-256"]
    assert rules.index(line) < next(i for i, r in enumerate(rules) if r[1] == "sameuser")


def test_hba_addresses() -> None:
    assert hba_address("10.1.2.3") == "10.1.2.3/32"
    assert hba_address("[fd00::1]") == "fd00::1/128"
    assert hba_address("backup-1") == "backup-1"
    assert hba_address("*") is None and hba_address("::") is None


# ---------------------------------------------------------------- restore names


def test_restore_database_names_fit_postgres_and_never_collide() -> None:
    assert restore_db_name("app_shop", "r", "abc1") == "app_shop__r_abc1"
    assert restore_db_name("app_shop", "pre", "abc1") == "app_shop__pre_abc1"
    a, b = "app_" + "x" * 47 + "a", "app_" + "x" * 47 + "b"
    na, nb = restore_db_name(a, "pre", "z" * 16), restore_db_name(b, "pre", "z" * 16)
    assert len(na) <= 63 and len(nb) <= 63 and na != nb
    assert na.endswith("__pre_" + "z" * 16)
    for bad in ("", "A", "x" * 17, "a-b", "a b", "é"):
        with pytest.raises(BadName):
            check_restore_id(bad)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("app_other", "an app's"),  # another app's database
        ("app_future", "an app's"),  # one an app made later would be given
        ("postgres", "reserved"),
        ("x__r_1", "reserved"),
        ("Upper", "not valid"),
        ("1abc", "not valid"),
        ("a;drop", "not valid"),
        ("x" * 64, "not valid"),
        ("shop", "an app's"),  # listed as an app's database (an older naming)
    ],
)
def test_a_restore_target_must_be_nobodys(target: str, why: str) -> None:
    with pytest.raises(BadName, match=why):
        check_target(target, ["app_other", "shop"])


def test_a_fresh_name_is_a_fine_target() -> None:
    assert check_target("shop_copy", ["app_shop"]) == "shop_copy"


# ---------------------------------------------------------------- Redis config


def _svc(**kw: object) -> Service:
    base: dict[str, object] = dict(
        app="a", kind="redis", port=6390, password="apppw", memory_mb=16,
        admin_password="adm", backup_password="bk",
    )  # fmt: skip
    return Service(**{**base, **kw})  # type: ignore[arg-type]


def test_the_backup_user_may_only_pull_a_snapshot() -> None:
    lines = render_conf(_svc(), Path("/d"), ["127.0.0.1"]).splitlines()
    user = next(ln for ln in lines if ln.startswith("user roost-backup "))
    assert user.split()[4:] == [
        "resetkeys", "resetchannels", "-@all", "+sync", "+psync", "+replconf", "+ping", "+info",
    ]  # fmt: skip
    assert ">bk" in user
    default = next(ln for ln in lines if ln.startswith("user default "))
    assert all(f"-{c}" in default.split() for c in ("sync", "psync", "replconf"))
    assert "repl-diskless-sync yes" in lines  # a pull writes nothing here
    # No password yet (a service recorded before backups): no such user.
    assert "roost-backup" not in render_conf(_svc(backup_password=""), Path("/d"), ["x"])


def test_snapshots_off_and_a_restored_rdb_in_the_config() -> None:
    on = render_conf(_svc(), Path("/d"), ["127.0.0.1"]).splitlines()
    assert 'save "3600 1 300 100 60 10000"' in on and "auto-aof-rewrite-percentage 100" in on
    off = render_conf(_svc(), Path("/d"), ["127.0.0.1"], snapshots=False).splitlines()
    assert 'save ""' in off and "auto-aof-rewrite-percentage 0" in off
    assert "appendonly no" in render_conf(_svc(), Path("/d"), ["x"], appendonly=False).splitlines()


def test_only_an_rdb_without_aof_files_is_loaded_with_the_aof_off(tmp_path: Path) -> None:
    assert not needs_aof_rebuild(tmp_path)  # a new server: nothing to load
    (tmp_path / "dump.rdb").write_bytes(b"REDIS")
    assert needs_aof_rebuild(tmp_path)
    (tmp_path / "appendonlydir").mkdir()
    assert not needs_aof_rebuild(tmp_path)  # the AOF is the truth


# ---------------------------------------------------------------- snapshot room


def _room(app: str, used_mb: int, free_mb: int, device: int = 1, off: bool = False) -> Room:
    return Room(app, used_mb * MiB, device, free_mb * MiB, off)


def test_snapshots_stay_on_while_they_fit() -> None:
    assert plan([_room("a", 100, 1000)], reserve=64 * MiB) == {"a": ""}


def test_a_snapshot_that_would_not_fit_is_turned_off_and_says_why() -> None:
    verdict = plan([_room("a", 900, 1000)], reserve=200 * MiB)
    assert verdict["a"].startswith("snapshots off: a snapshot of 900 MiB would not fit")
    assert "1000 MiB free" in verdict["a"]


def test_servers_on_one_disk_share_it_smallest_first() -> None:
    rooms = [_room("big", 600, 1000), _room("small", 100, 1000), _room("mid", 300, 1000)]
    verdicts = plan(rooms, reserve=64 * MiB)
    assert {a for a, why in verdicts.items() if why} == {"big"}
    # On another disk, another budget.
    verdicts = plan([*rooms, _room("elsewhere", 600, 1000, device=2)], reserve=64 * MiB)
    assert verdicts["elsewhere"] == ""


def test_snapshots_resume_only_with_a_margin() -> None:
    need = 400 * RESUME_MARGIN + 64  # MiB, free needed to turn a 400 MiB server back on
    assert plan([_room("a", 400, int(need) - 10, off=True)], reserve=64 * MiB)["a"]
    assert plan([_room("a", 400, int(need) - 10, off=False)], reserve=64 * MiB)["a"] == ""
    assert plan([_room("a", 400, int(need) + 10, off=True)], reserve=64 * MiB)["a"] == ""


# ---------------------------------------------------------------- data archives


def _tar(*entries: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for e in entries:
            if isinstance(e, tarfile.TarInfo):
                tar.addfile(e)
            else:
                info = tarfile.TarInfo(e[0])
                info.size = len(e[1])
                tar.addfile(info, io.BytesIO(e[1]))
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([("../evil", b"x")], "leaves"),
        ([("a/../../evil", b"x")], "leaves"),
        ([("/etc/evil", b"x")], "relative"),
        ([_link("up", "../../etc")], "points outside"),
        ([_link("abs", "/etc/passwd")], "points outside"),
        ([_dir("d"), _link("d/l", "../..")], "points outside"),
        ([_link("l", "sub"), _dir("sub"), ("l/x", b"x")], "through the symlink"),
        ([("d/f", b"x"), _link("d", "e")], "replaces a directory"),
        ([_link("hard", "f", tarfile.LNKTYPE)], "not a file"),
        ([_link("dev", "", tarfile.CHRTYPE)], "not a file"),
        ([("f", b"1"), ("./f", b"2")], "twice"),
    ],
)
def test_an_archive_that_could_escape_is_refused(
    entries: list[tarfile.TarInfo | tuple[str, bytes]], why: str
) -> None:
    with pytest.raises(BadArchive, match=why):
        check_members(_members(_tar(*entries)))


def test_a_good_archive_unpacks_with_its_symlinks_as_links(tmp_path: Path) -> None:
    data = _tar(_dir("."), _dir("sub"), ("sub/f.txt", b"hello"), _link("sub/l", "f.txt"),
                _link("top", "sub/f.txt"))  # fmt: skip
    assert check_members(_members(data)) == 5
    dest = tmp_path / "new"
    unpack(data, dest)
    assert (dest / "sub" / "f.txt").read_bytes() == b"hello"
    assert (dest / "top").is_symlink() and str((dest / "top").readlink()) == "sub/f.txt"
    assert (dest.stat().st_mode & 0o777) == 0o700


def test_directories_keep_their_archived_modes_under_a_private_umask(tmp_path: Path) -> None:
    shared, private = _dir("shared"), _dir("private")
    shared.mode, private.mode = 0o777, 0o500
    data = _tar(_dir("."), _dir("sub"), shared, private, ("sub/f.txt", b"x"))
    old = os.umask(0o077)  # the servicehost's own
    try:
        unpack(data, tmp_path / "new")
    finally:
        os.umask(old)
    modes = {d: (tmp_path / "new" / d).stat().st_mode & 0o777 for d in ("sub", "shared", "private")}
    # As archived, less group and other write; the owner (the servicehost) keeps rwx.
    assert modes == {"sub": 0o755, "shared": 0o755, "private": 0o700}
    assert ((tmp_path / "new").stat().st_mode & 0o777) == 0o700


def test_garbage_is_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(BadArchive, match="not a tar archive"):
        unpack(b"this is no tar at all" * 10, tmp_path / "x")
    assert not (tmp_path / "x").exists()
