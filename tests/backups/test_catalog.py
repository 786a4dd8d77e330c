"""The catalog: one record per backup, written atomically, read back after a restart."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from roost.backups.catalog import (
    Catalog,
    CatalogError,
    Record,
    new_id,
    newest,
    restore_id,
    summary,
    undrilled,
)
from roost.wire.messages import BackupEntry

T0 = 1_780_000_000.0


def _rec(kind: str, app: str, at: float, state: str = "taken") -> Record:
    entry = BackupEntry(id=new_id(kind, at), app=app, kind=kind, taken_at=at, state=state)  # type: ignore[arg-type]
    return Record(entry=entry, source="svc1", facts={"tables": {"t": [3, "abc"]}})


def test_ids_are_named_by_kind_and_time_and_never_alike() -> None:
    a, b = new_id("pgdump", T0), new_id("pgdump", T0)
    assert a != b and a.startswith("pgdump-20260528T")
    ids = {restore_id() for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch("[a-z0-9]{1,16}", r) for r in ids)


def test_records_survive_a_restart_and_rewrites_replace(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog")
    old, new = _rec("pgdump", "a", T0), _rec("redis", "a", T0 + 5)
    cat.put(new)
    cat.put(old)
    verified = msgspec.structs.replace(
        old, entry=msgspec.structs.replace(old.entry, state="verified", verified_at=T0 + 9)
    )
    cat.put(verified)
    again = Catalog(tmp_path / "catalog")
    assert [r.id for r in again.records()] == [old.id, new.id]  # oldest first
    assert again.get(old.id) == verified
    assert not list((tmp_path / "catalog").glob("*.tmp"))
    again.remove(new.id)
    assert [r.id for r in Catalog(tmp_path / "catalog")] == [old.id]


def test_bad_ids_and_unknown_backups_are_clear_errors(tmp_path: Path) -> None:
    cat = Catalog(tmp_path)
    with pytest.raises(CatalogError, match="not a backup id"):
        cat.get("../../etc/passwd")
    with pytest.raises(CatalogError, match="no backup pgdump-20260101T000000Z-abcdef"):
        cat.get("pgdump-20260101T000000Z-abcdef")


def test_an_unreadable_record_is_set_aside_not_trusted(tmp_path: Path) -> None:
    cat = Catalog(tmp_path)
    rec = _rec("data", "b", T0)
    cat.put(rec)
    (tmp_path / "data-20260101T000000Z-abcdef.json").write_text("{not json")
    assert [r.id for r in Catalog(tmp_path)] == [rec.id]
    assert (tmp_path / "data-20260101T000000Z-abcdef.unreadable").exists()


def test_newest_summary_and_undrilled() -> None:
    recs = [
        _rec("pgdump", "a", T0, "verified"),
        _rec("pgdump", "a", T0 + 10, "failed"),
        _rec("redis", "a", T0 + 20, "taken"),
        _rec("pgdump", "b", T0 + 30, "verified"),
    ]
    assert newest(recs, "a", "pgdump") == recs[1]
    assert newest(recs, "a", "pgdump", verified=True) == recs[0]
    assert newest(recs, "c", "pgdump") is None
    # the newest of each (app, kind), and the newest verified one when older
    assert [e.id for e in summary(recs)] == [recs[0].id, recs[1].id, recs[2].id, recs[3].id]
    assert [e.id for e in summary(recs[1:])] == [recs[1].id, recs[2].id, recs[3].id]
    assert undrilled(recs) == [recs[2]]
