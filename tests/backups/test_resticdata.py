"""What restic 0.14 prints, read (roost.backups.resticdata): pure, on
output captured from it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from roost.backups.locations import Location, RepoError, Unreachable
from roost.backups.resticdata import (
    Locked,
    Made,
    NotARepository,
    WrongPassword,
    backup_summary,
    check_subset,
    classify,
    made_from,
    parse_forget,
    parse_snapshots,
    parse_time,
    relative,
    tag_arg,
)

LOCAL = Location(name="local", kind="local", repository="/r", path="/r")


def test_snapshots_with_their_parent_and_tags() -> None:
    out = json.dumps([
        {"id": "b" * 64, "time": "2026-12-05T21:00:01.123456789Z", "tags": ["app=", "kind=pgbase"],
         "paths": ["/d/backupd/barman/sh1"], "hostname": "backupd", "parent": "a" * 64},
        {"id": "a" * 64, "time": "2026-12-04T21:00:00+01:00", "paths": ["/d"]},
    ]).encode()  # fmt: skip
    second, first = parse_snapshots(out)
    assert second.parent == "a" * 64 and first.parent == ""
    assert second.tag("kind") == "pgbase" and second.tag("app") == "" and second.tag("id") is None
    assert second.time == datetime(2026, 12, 5, 21, 0, 1, 123456, tzinfo=UTC)
    assert first.time == datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    assert parse_snapshots(b"") == [] and parse_snapshots(b"null") == []
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_a_backup_summary_says_what_was_read_again() -> None:
    status = {"message_type": "status", "percent_done": 0.5}
    summary = {"message_type": "summary", "files_new": 1, "files_changed": 2,
               "files_unmodified": 21, "data_added": 345, "snapshot_id": "0123abcd"}  # fmt: skip
    out = f"{json.dumps(status)}\n{json.dumps(summary)}\n".encode()
    said = backup_summary(out)
    assert said["snapshot_id"] == "0123abcd"
    assert made_from("0123abcd" + "0" * 56, said) == Made(
        "0123abcd" + "0" * 56, files_new=1, files_changed=2, files_unmodified=21, data_added=345
    )
    with pytest.raises(RepoError, match="no summary"):
        backup_summary(json.dumps(status).encode())


def test_errors_are_named_by_what_restic_said() -> None:
    assert isinstance(classify(LOCAL, "restic backup", "Fatal: wrong password or no key found"),
                      WrongPassword)  # fmt: skip
    stderr = (
        "Fatal: unable to open config file: ...\nIs there a repository at the following location?"
    )
    assert isinstance(classify(LOCAL, "restic snapshots", stderr), NotARepository)
    locked = classify(
        LOCAL, "restic forget", "unable to create lock in backend: repository is already locked"
    )
    assert isinstance(locked, Locked) and locked.retryable
    refused = "dial tcp 10.0.0.5:22: connect: connection refused"
    assert isinstance(classify(LOCAL, "restic copy", refused), Unreachable)
    assert classify(LOCAL, "restic check", "Fatal: repository contains errors") is None


def test_forget_and_arguments() -> None:
    out = json.dumps([{"keep": [{"id": "k1"}], "remove": [{"id": "r1"}, {"id": "r2"}]},
                      {"keep": [{"id": "k2"}], "remove": None}]).encode()  # fmt: skip
    gone = parse_forget(out)
    assert gone.kept == ("k1", "k2") and gone.removed == ("r1", "r2")
    assert tag_arg(["app=a", "kind=data"]) == "app=a,kind=data"
    for bad in (["a,b"], ["a b"], [""]):
        with pytest.raises(ValueError):
            tag_arg(bad)
    assert relative(["barman/sh1", "."]) == ["barman/sh1", "."]
    for bad_path in ("/etc", "../x", "a/../../b", ""):
        with pytest.raises(ValueError):
            relative([bad_path])
    assert check_subset(False) == [] and check_subset(True) == ["--read-data"]
    assert check_subset("1/5") == ["--read-data-subset=1/5"]
    with pytest.raises(ValueError):
        check_subset("all")
