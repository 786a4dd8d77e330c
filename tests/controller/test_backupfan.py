"""Several backupds, each with its own history: what a capture, a listing, a
restore and the health come to over their answers (pure, no sockets)."""

from __future__ import annotations

import msgspec

from roost.controller.backupfan import Listing, best_of, captured, stamped, to_ask
from roost.controller.backups import check_restore, health, restore_target
from roost.wire.messages import BackupEntry, BackupList
from tests.controller.backupskit import NOW, H, entry


def test_a_capture_succeeds_when_one_backupd_took_it_and_names_the_others() -> None:
    got = captured(
        {
            "bak1": [entry("a", "pgdump", 0, "taken"), entry("a", "git", 0, "skipped")],
            "bak2": "backupd bak2 did not answer (no reply)",
        }
    )
    assert got.ok and got.took == ["bak1"]
    assert got.failures == {"bak2": "backupd bak2 did not answer (no reply)"}
    assert {e.backupd for e in got.entries} == {"bak1"}


def test_a_capture_with_a_failed_entry_is_a_failure_of_that_backupd() -> None:
    got = captured(
        {
            "bak1": [entry("a", "pgdump", 0, "failed", message="no room")],
            "bak2": "refused",
        }
    )
    assert not got.ok and got.took == []
    assert got.failures == {"bak1": "pgdump: no room", "bak2": "refused"}
    # What it did record is still listed, naming where.
    assert [e.backupd for e in got.entries] == ["bak1"]


def test_nothing_to_back_up_is_a_success() -> None:
    assert captured({"bak1": [], "bak2": []}).took == ["bak1", "bak2"]


def test_a_listing_merges_every_backupd_and_names_the_unreachable() -> None:
    listing = Listing(
        {
            "bak1": BackupList(
                entries=[entry("a", "pgdump", 2)], pitr_from=NOW - 9 * H, pitr_to=NOW - 5 * H
            ),
            "bak2": BackupList(
                entries=[entry("a", "pgdump", 1), entry("a", "redis", 3)],
                pitr_from=NOW - 4 * H,
                pitr_to=NOW,
            ),
        },
        {"bak3": "did not answer"},
    )
    assert [(e.backupd, e.id) for e in listing.entries] == [
        ("bak2", "redis-3"),
        ("bak1", "pgdump-2"),
        ("bak2", "pgdump-1"),
    ]
    assert listing.status() == {"bak1": "ok", "bak2": "ok", "bak3": "unreachable: did not answer"}
    assert (listing.pitr_from, listing.pitr_to) == (NOW - 9 * H, NOW)
    assert listing.window_holder(NOW - 6 * H) == "bak1"
    assert listing.window_holder(NOW - H) == "bak2"
    assert listing.window_holder(NOW - 4.5 * H) is None  # between the two windows


def test_a_restore_goes_to_the_backupd_that_holds_it() -> None:
    same_id = entry("a", "pgdump", 2)
    listing = Listing(
        {
            "bak1": BackupList(
                entries=[msgspec_replace(same_id, state="failed", message="drill: x")],
                pitr_from=NOW - 48 * H, pitr_to=NOW - 60,
            ),
            "bak2": BackupList(entries=[same_id, entry("a", "data", 1)], pitr_from=NOW - 2 * H,
                               pitr_to=NOW),
        }
    )  # fmt: skip
    # The usable copy of an id both hold, and the only holder of another.
    assert restore_target(listing, "a", "pgdump-2", "") == "bak2"
    assert check_restore(listing, "a", "pgdump-2", "") == ""
    assert restore_target(listing, "a", "data-1", "") == "bak2"
    assert restore_target(listing, "a", "nope", "") is None
    assert "has no backup nope" in check_restore(listing, "a", "nope", "")
    # A time: the first backupd (address-book order) whose window holds it.
    assert restore_target(listing, "a", "", "2026-03-10T11:00:00Z") == "bak1"
    assert restore_target(listing, "a", "", "2026-03-10T11:59:30Z") == "bak2"
    assert check_restore(listing, "a", "", "2026-03-10T11:59:30Z") == ""
    outside = check_restore(listing, "a", "", "2026-03-07T00:00:00Z")
    assert "outside a's point-in-time window" in outside and "nothing was changed" in outside


def msgspec_replace(e: BackupEntry, **kw: object) -> BackupEntry:
    return msgspec.structs.replace(e, **kw)


def test_a_backupd_that_did_not_answer_is_skipped_for_a_while() -> None:
    down = {"bak2": (100.0, "did not answer")}
    assert to_ask(["bak1", "bak2"], down, 99.0) == (["bak1"], {"bak2": "did not answer"})
    assert to_ask(["bak1", "bak2"], down, 100.0) == (["bak1", "bak2"], {})
    # The only one (or every one) down: asked all the same.
    assert to_ask(["bak2"], down, 99.0) == (["bak2"], {})


def test_an_app_is_fine_when_any_backupd_is_and_the_failing_one_shows() -> None:
    failing = stamped("bak1", [entry("a", "pgdump", 1, "failed", message="drill: x")])
    fine = stamped("bak2", [entry("a", "pgdump", 2)])
    (h,) = health([*failing, *fine], NOW)
    assert (h.state, h.red) == ("ok", False)
    assert h.message == "bak1: failed (pgdump pgdump-1: drill: x)"
    assert h.verified_at == NOW - 2 * H
    # Fine nowhere: red, as its best backupd is, naming the other's trouble.
    (h,) = health([*failing, *stamped("bak2", [entry("a", "pgdump", 30)])], NOW)
    assert (h.state, h.red) == ("stale", True)
    assert h.message == "pgdump: none verified in 30 h; bak1: failed (pgdump pgdump-1: drill: x)"


def test_one_backupd_s_health_reads_as_before() -> None:
    assert best_of({"bak1": ("pending", 0.0, "pgdump: its first backup is being proven")}) == (
        "pending",
        0.0,
        "pgdump: its first backup is being proven",
    )
    assert best_of({"bak1": ("ok", 5.0, ""), "bak2": ("ok", 7.0, "")}) == ("ok", 7.0, "")
