"""The rules every role applies to an app's directories (roost.appdirs)."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import pytest

from roost import appdirs

NOW = calendar.timegm((2024, 6, 1, 12, 0, 0, 0, 0, 0))
DAY = 86400.0


def test_verdicts() -> None:
    assert appdirs.on_use("1-5", "1-5") == "keep"
    assert appdirs.on_use(None, "1-5") == "adopt"
    assert appdirs.on_use("1-4", "1-5") == "archive"
    assert appdirs.on_use("1-4", "") == "keep"  # an older controller: no information
    assert appdirs.on_removed("1-5", "1-5") == "archive"
    assert appdirs.on_removed(None, "1-5") == "archive"
    # A late or repeated removal never takes a newer app's directory.
    assert appdirs.on_removed("1-9", "1-5") == "keep"


def test_use_archives_another_incarnations_directory(tmp_path: Path) -> None:
    home, archive = tmp_path / "apps" / "shop", tmp_path / "archive"
    assert appdirs.use(home, archive, "shop", "3-100", NOW) is None
    (home / "secret").write_text("old")
    assert appdirs.use(home, archive, "shop", "3-100", NOW) is None  # the same app: kept
    assert (home / "secret").exists()
    moved = appdirs.use(home, archive, "shop", "3-200", NOW)
    assert moved == archive / "shop.3-100.20240601T120000Z"
    assert (moved / "secret").read_text() == "old"
    assert sorted(p.name for p in home.iterdir()) == [appdirs.MARKER]
    assert appdirs.read_key(home) == "3-200"


def test_use_adopts_an_unmarked_directory_and_reuses_an_empty_marked_one(tmp_path: Path) -> None:
    home, archive = tmp_path / "shop", tmp_path / "archive"
    home.mkdir()
    (home / "data").mkdir()
    assert appdirs.use(home, archive, "shop", "3-100", NOW) is None
    assert (home / "data").is_dir() and appdirs.read_key(home) == "3-100"
    empty = tmp_path / "other"
    empty.mkdir()
    appdirs.write_key(empty, "4-1")
    assert appdirs.use(empty, archive, "other", "4-2", NOW) is None
    assert appdirs.read_key(empty) == "4-2" and not archive.exists()


def test_remove_is_idempotent_and_spares_a_newer_app(tmp_path: Path) -> None:
    home, archive = tmp_path / "shop", tmp_path / "archive"
    appdirs.use(home, archive, "shop", "3-100", NOW)
    (home / "f").write_text("x")
    first = appdirs.remove(home, archive, "shop", "3-100", NOW)
    assert first is not None and (first / "f").exists() and not home.exists()
    assert appdirs.remove(home, archive, "shop", "3-100", NOW) is None
    appdirs.use(home, archive, "shop", "3-200", NOW)
    (home / "g").write_text("new")
    assert appdirs.remove(home, archive, "shop", "3-100", NOW) is None
    assert (home / "g").exists()
    # Two archives of one second get distinct names.
    second = appdirs.remove(home, archive, "shop", "3-200", NOW)
    assert second is not None and second.name == "shop.3-200.20240601T120000Z"
    appdirs.use(home, archive, "shop", "3-300", NOW)
    (home / "h").write_text("x")
    third = appdirs.remove(home, archive, "shop", "3-300", NOW, ".git")
    assert third is not None and third.name == "shop.3-300.20240601T120000Z.git"


@pytest.mark.parametrize("key", ["", "1", "a-1", "1-2-3", "../1-2", "1-2\n"])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(appdirs.BadKey):
        appdirs.remove(tmp_path, tmp_path / "archive", "shop", key, NOW)


def test_bad_app_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(appdirs.BadKey):
        appdirs.archive(tmp_path / "d", tmp_path / "archive", "../etc", "1-2", NOW)


def test_a_forged_marker_is_no_key(tmp_path: Path) -> None:
    (tmp_path / appdirs.MARKER).write_text("../../x")
    assert appdirs.read_key(tmp_path) is None


def test_purge_removes_only_expired_entries_of_its_own(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    old = NOW - 8 * DAY
    for app, when in (("a", old), ("b", NOW - DAY)):
        d = tmp_path / app
        d.mkdir()
        (d / "f").write_text("x")
        appdirs.archive(d, archive, app, "1-1", when)
    foreign = archive / "notes.txt"
    foreign.write_text("an operator's")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(old))
    assert appdirs.purge(archive, 7 * DAY, NOW) == [f"a.1-1.{stamp}"]
    assert sorted(p.name for p in archive.iterdir()) == sorted(
        ["notes.txt", f"b.1-1.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(NOW - DAY))}"]
    )
    assert appdirs.purge(tmp_path / "missing", 7 * DAY, NOW) == []


def test_a_copy_aside_a_crash_cut_short_is_purged_with_its_age(tmp_path: Path) -> None:
    # _copy_aside copies to DEST.partial, then renames: a crash between the
    # two left the partial copy in the archive for ever.
    archive = tmp_path / "archive"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW - 8 * DAY))
    young = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW - DAY))
    # A suffixed entry (a quota's ".image", a repository's ".git") too.
    for name in (f"a.1-1.{stamp}.image.partial", f"b.1-1.{young}.partial"):
        (archive / name).mkdir(parents=True)
        (archive / name / "f").write_text("x")
    assert appdirs.purge(archive, 7 * DAY, NOW) == [f"a.1-1.{stamp}.image.partial"]
    assert [p.name for p in archive.iterdir()] == [f"b.1-1.{young}.partial"]
