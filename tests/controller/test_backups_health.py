"""The controller's view of backups: health (red or not), and restores refused
before anything changes (pure)."""

from __future__ import annotations

import pytest

from roost.controller.backups import BackupError, check_restore, described, health, iso, parse_at
from roost.wire.messages import BackupEntry, BackupList
from tests.controller.backupskit import NOW, H, entry


def _by_app(entries: list[BackupEntry]) -> dict[str, tuple[str, bool, str]]:
    return {h.app: (h.state, h.red, h.message) for h in health(entries, NOW)}


def test_recent_verified_backups_of_every_kind_are_fine() -> None:
    got = _by_app([entry("a", "pgdump", 2), entry("a", "redis", 1), entry("", "platform", 3)])
    assert got == {"a": ("ok", False, ""), "": ("ok", False, "")}


def test_the_newest_failing_is_red_even_with_an_older_verified_one() -> None:
    got = _by_app(
        [entry("a", "pgdump", 20), entry("a", "pgdump", 2, "failed", message="drill: t: 3 rows")]
    )
    assert got["a"][:2] == ("failed", True)
    assert "drill: t: 3 rows" in got["a"][2]


def test_none_verified_in_26_hours_is_red() -> None:
    got = _by_app([entry("a", "pgdump", 27), entry("a", "pgdump", 1, "taken")])
    assert got["a"] == ("stale", True, "pgdump: none verified in 27 h")
    got = _by_app([entry("a", "pgdump", 25.5), entry("a", "redis", 1)])
    assert got["a"][0] == "ok"


def test_a_first_backup_being_proven_is_pending_then_red_if_never_proven() -> None:
    assert _by_app([entry("a", "data", 0.1, "taken")])["a"][:2] == ("pending", False)
    assert _by_app([entry("a", "data", 30, "taken")])["a"] == ("none", True, "data: never verified")


def test_a_skipped_backup_is_neither_proven_nor_failed() -> None:
    """A repository without a commit was skipped: its app's health is what
    its other backups say, and there is nothing to restore from it."""
    skipped = entry("a", "git", 0.5, "skipped", message="a's repository has no commit yet")
    assert _by_app([entry("a", "pgdump", 1), skipped])["a"] == ("ok", False, "")
    assert _by_app([skipped]) == {}
    listing = BackupList(entries=[skipped])
    assert "skipped (a's repository has no commit yet)" in check_restore(
        listing, "a", "git-0.5", ""
    )
    assert described([entry("a", "pgdump", 1, "taken"), skipped]) == (
        "pgdump-1, git skipped (a's repository has no commit yet)"
    )


def test_a_backup_that_did_not_reach_a_location_is_red() -> None:
    unreached = entry("a", "pgdump", 1, locations={"local": "ok", "offsite": "error: unreachable"})
    state, red, message = _by_app([unreached])["a"]
    assert (state, red) == ("failed", True) and "offsite: error: unreachable" in message


def test_times_are_iso_8601_to_the_second() -> None:
    assert parse_at("2026-03-10T11:00:05Z").timestamp() == NOW - H + 5
    assert parse_at("2026-03-10T12:00:05+01:00").timestamp() == NOW - H + 5
    assert parse_at("2026-03-10T11:00:05").timestamp() == NOW - H + 5  # UTC unless told
    with pytest.raises(BackupError, match="to the second"):
        parse_at("2026-03-10T11:00:05.25Z")
    with pytest.raises(BackupError, match="not an ISO 8601 time"):
        parse_at("yesterday")
    assert iso(NOW) == "2026-03-10T12:00:00Z"


def test_a_restore_is_checked_before_anything_changes() -> None:
    listing = BackupList(
        entries=[
            entry("a", "pgdump", 2),
            entry("a", "redis", 1, "failed", message="drill: x"),
            entry("", "platform", 1),
        ],
        pitr_from=NOW - 48 * H,
        pitr_to=NOW - 60,
    )
    assert check_restore(listing, "a", "pgdump-2", "") == ""
    assert "failed (drill: x)" in check_restore(listing, "a", "redis-1", "")
    assert "has no backup platform-1" in check_restore(listing, "a", "platform-1", "")
    assert "has no backup nope" in check_restore(listing, "a", "nope", "")
    assert "exactly one" in check_restore(listing, "a", "pgdump-2", "2026-03-10T11:00:00Z")
    assert "exactly one" in check_restore(listing, "a", "", "")
    assert check_restore(listing, "a", "", "2026-03-10T11:00:00Z") == ""
    outside = check_restore(listing, "a", "", "2026-03-10T11:59:30Z")
    assert "outside a's point-in-time window" in outside and "nothing was changed" in outside
    assert "no point-in-time window" in check_restore(
        BackupList(entries=[]), "a", "", "2026-03-10T11:00:00Z"
    )
