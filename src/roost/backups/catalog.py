"""What backupd has taken: one JSON record per backup in DATA/backupd/catalog.

Theory of operation: a record is written (atomically: a temporary file,
fsync, rename) when a backup is *taken*, that is when every byte of it is in
the local repository; it is rewritten as the backup moves on: copied to the
offsite location (or recorded there as failed, with why), then *verified* by
its drill or *failed*. Nothing is ever marked verified without a drill, and
a backup that did not reach the local repository has a record in state
"failed" with the reason, never one in "taken": a partial backup is never
counted as good. One whose source held nothing (a repository without a
commit) has a record in state "skipped", with why, and no snapshot.

A record carries the wire's `BackupEntry` (what `roost backups list` shows)
and what only backupd needs: the restic snapshot of each location, where it
came from, and the facts taken at backup time that its drill compares the
restored copy with (the same facts are in the snapshot as facts.json, so a
fresh backupd can rebuild this catalog from a repository).

The selections below (newest, runs, ...) are pure functions over records.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from roost.wire.messages import BackupEntry, BackupKind

# <kind>-<UTC stamp>-<random>: sortable by time within a kind, never reused.
ID_RE = re.compile(r"^[a-z]{2,8}-\d{8}T\d{6}Z-[0-9a-f]{6}$")


class Record(msgspec.Struct, frozen=True, kw_only=True):
    entry: BackupEntry
    # Where it was pulled from: a servicehost's id (postgres, redis, data),
    # a gateway (git), a controller (platform).
    source: str = ""
    # location name -> restic snapshot id there
    snapshots: dict[str, str] = {}
    # pgdump: the app's database it was dumped from
    database: str = ""
    # Facts taken at backup time (row counts and checksums, file hashes,
    # refs, key counts): what the drill compares the restored copy with.
    facts: dict[str, Any] = {}

    @property
    def id(self) -> str:
        return self.entry.id


def new_id(kind: BackupKind, now: float, token: str | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{kind}-{stamp}-{token or secrets.token_hex(3)}"


def restore_id() -> str:
    """A restore's id as the servicehost takes it ([a-z0-9]{1,16})."""
    return secrets.token_hex(6)


class CatalogError(Exception):
    pass


_decoder = msgspec.json.Decoder(Record)


class Catalog:
    """The records on disk, read once and kept in memory (backupd is their only writer)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._records: dict[str, Record] | None = None

    def _path(self, backup_id: str) -> Path:
        if not ID_RE.match(backup_id):
            raise CatalogError(f"{backup_id!r} is not a backup id")
        return self.root / f"{backup_id}.json"

    def _load(self) -> dict[str, Record]:
        if self._records is None:
            records: dict[str, Record] = {}
            self.root.mkdir(parents=True, exist_ok=True)
            for path in sorted(self.root.glob("*.json")):
                try:
                    rec = _decoder.decode(path.read_bytes())
                except (OSError, msgspec.DecodeError):
                    # A torn file cannot exist (writes are renames); one that
                    # does not parse is set aside rather than trusted or lost.
                    path.rename(path.with_suffix(".unreadable"))
                    continue
                records[rec.id] = rec
            self._records = records
        return self._records

    def put(self, rec: Record) -> None:
        path = self._path(rec.id)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, msgspec.json.encode(rec))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._load()[rec.id] = rec

    def get(self, backup_id: str) -> Record:
        self._path(backup_id)  # a malformed id is refused as such
        try:
            return self._load()[backup_id]
        except KeyError:
            raise CatalogError(f"no backup {backup_id}") from None

    def remove(self, backup_id: str) -> None:
        self._path(backup_id).unlink(missing_ok=True)
        self._load().pop(backup_id, None)

    def records(self) -> list[Record]:
        """Every record, oldest first."""
        return sorted(self._load().values(), key=lambda r: (r.entry.taken_at, r.id))

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())


def of_app(records: Iterable[Record], app: str) -> list[Record]:
    return [r for r in records if r.entry.app == app]


def newest(records: Iterable[Record], app: str, kind: str, verified: bool = False) -> Record | None:
    """The newest record of the app's kind (only verified ones if asked)."""
    best: Record | None = None
    for r in records:
        e = r.entry
        if e.app != app or e.kind != kind or (verified and e.state != "verified"):
            continue
        if best is None or e.taken_at > best.entry.taken_at:
            best = r
    return best


def summary(records: Iterable[Record]) -> list[BackupEntry]:
    """Per (app, kind): the newest entry, and the newest verified one when
    older (what a platform-wide list shows without every day of history)."""
    newest_any: dict[tuple[str, str], BackupEntry] = {}
    newest_ok: dict[tuple[str, str], BackupEntry] = {}
    for r in records:
        e = r.entry
        key = (e.app, e.kind)
        if key not in newest_any or e.taken_at > newest_any[key].taken_at:
            newest_any[key] = e
        if e.state == "verified" and (key not in newest_ok or e.taken_at > newest_ok[key].taken_at):
            newest_ok[key] = e
    out = list(newest_any.values())
    out += [e for k, e in newest_ok.items() if newest_any[k].id != e.id]
    return sorted(out, key=lambda e: (e.app, e.kind, e.taken_at))


def renamed(
    records: Iterable[Record],
    names: Mapping[str, Sequence[str]],
    holder: Callable[[str], str | None],
) -> list[Record]:
    """The records an older backupd kept under a servicehost's key name
    (`names`: key name -> ids of the servicehosts answering by it, as
    sources.old_names), with the servicehost's id as their source: the one
    servicehost of that name, else the app's holder among them now. One
    that cannot be told (a base backup of two alike) stays as it was: only
    the schedule reads a base backup's source. Pure."""
    out = []
    for r in records:
        ids = names.get(r.source)
        if not ids or r.source in ids:
            continue
        new = ids[0] if len(ids) == 1 else (holder(r.entry.app) if r.entry.app else None)
        if new in ids:
            out.append(msgspec.structs.replace(r, source=new))
    return out


def undrilled(records: Iterable[Record]) -> list[Record]:
    """Taken but neither verified nor failed: their drill is owed (after a
    restart that interrupted one, or a drill queue that was full)."""
    return [r for r in records if r.entry.state == "taken"]
