"""Desired state for the reconcile: read in one go, compared app by app, turned into Wants purely.

`Reader.read` runs on the store's executor (`AsyncStore.read_desired`).
It first reads the desired-state count (roost.controller.store_snapshot):
when no write happened since its last read, that one number is all it
reads. Otherwise it issues a fixed handful of queries whatever the number
of apps: apps, formations, placements, pending releases, domains,
certificates, and the release rows not yet cached (`Store.releases_for`,
a few thousand per query). The three big tables come as plain sorted
tuples (`Store.snapshot_rows`); a table equal to the previous read's is
skipped with one list compare, and the others are grouped by app and
compared group by group, so a read names exactly the apps whose rows
changed (`Desired.apps`), with their new inputs and placements.

The lease holder's own placement writes are told to the reader
(`wrote_placements`), so its next read does not take them for changes;
when no other write came between, not even the count moves for them.

Release rows never change after creation (only their status does, which
the reconcile takes from `apps` and the pending list), so they are cached by
(app id, version) for good.

`wants` is pure: which (app, release, process type, count) should run.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from roost.controller.scheduler import Placement, Want
from roost.controller.store import AppRow, ReleaseRow, Store
from roost.wire.messages import TlsCertificate

ReleaseKey = tuple[int, int]  # (app id, version)


@dataclass(frozen=True)
class AppInputs:
    """One app's desired state, besides its placements and release rows."""

    row: AppRow
    formation: Mapping[str, int] = field(default_factory=dict)  # process type -> count
    sizes: Mapping[str, int] = field(default_factory=dict)  # process type -> MB, where set
    pending: tuple[ReleaseRow, ...] = ()
    domains: tuple[str, ...] = ()
    certificates: tuple[TlsCertificate, ...] = ()
    # Pending ACME HTTP-01 answers for its domains: (token, key authorization).
    challenges: tuple[tuple[str, str], ...] = ()

    def needed(self, placements: list[Placement]) -> set[ReleaseKey]:
        """The releases a pass needs for this app: serving, pending, and placed."""
        app_id = self.row.id
        keys = {(app_id, r.version) for r in self.pending}
        if self.row.current_release is not None:
            keys.add((app_id, self.row.current_release))
        keys.update((app_id, p.release) for p in placements)
        return keys


@dataclass
class Desired:
    """What one read found changed since the reader's previous one."""

    version: int  # the desired-state count the read saw first
    full: bool  # the reader's first read: `apps` holds every app
    # App id -> its inputs now (None: deleted), for every app that changed.
    apps: dict[int, AppInputs | None] = field(default_factory=dict)
    # App id -> its stored placements, for the same apps.
    placements: dict[int, list[Placement]] = field(default_factory=dict)
    # Release rows read now because the cache lacked them.
    fetched: dict[ReleaseKey, ReleaseRow] = field(default_factory=dict)


class ReleaseCache(Mapping[ReleaseKey, ReleaseRow]):
    """Release rows by (app id, version), indexed by app too, so a pass drops
    what one app no longer needs at the cost of that app's releases."""

    def __init__(self) -> None:
        self._rows: dict[ReleaseKey, ReleaseRow] = {}
        self._versions: dict[int, set[int]] = {}

    def __getitem__(self, key: ReleaseKey) -> ReleaseRow:
        return self._rows[key]

    def __contains__(self, key: object) -> bool:
        return key in self._rows  # one lookup: safe from the store's threads

    def __iter__(self) -> Iterator[ReleaseKey]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: ReleaseRow) -> None:
        self._rows[(row.app_id, row.version)] = row
        self._versions.setdefault(row.app_id, set()).add(row.version)

    def keep(self, app_id: int, needed: set[ReleaseKey]) -> None:
        """Drop the app's rows but the `needed` ones."""
        versions = self._versions.get(app_id, set())
        for v in [v for v in versions if (app_id, v) not in needed]:
            versions.discard(v)
            del self._rows[(app_id, v)]
        if not versions:
            self._versions.pop(app_id, None)


# Per app, what a read compares: its row, formation, placements, pending
# release versions, domains, certificates, ACME challenges.
_Group = tuple[Any, ...]
_TABLES = ("apps", "formation", "placements", "pending", "domains", "certificates", "challenges")


def _grouped(rows: list[tuple[Any, ...]], key: int = 0) -> dict[Any, tuple[Any, ...]]:
    out: dict[Any, list[Any]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return {k: tuple(v) for k, v in out.items()}


class Reader:
    """Reads desired state, reporting only the apps that changed since its last read."""

    def __init__(self) -> None:
        self.version = -1  # the count its groups stand for (-1: nothing read yet)
        self._rows: dict[str, list[Any]] = {}
        # table -> app key (id, or name for placements) -> that app's rows
        self._groups: dict[str, dict[Any, tuple[Any, ...]]] = {t: {} for t in _TABLES}
        self._pending: dict[int, tuple[ReleaseRow, ...]] = {}

    def wrote_placements(self, placed: Mapping[str, list[Placement]], version: int | None) -> None:
        """The lease holder wrote these apps' placements (app name -> all of them),
        and the count became `version` (None: nothing was written)."""
        groups = self._groups["placements"]
        for app, ps in placed.items():
            rows = sorted((p.instance_id, p.app, p.release, p.process_type, p.idx, p.host_id)
                          for p in ps)  # fmt: skip
            if rows:
                groups[app] = tuple(rows)
            else:
                groups.pop(app, None)
        self._rows.pop("placements", None)  # the full list no longer matches: regroup
        if version is not None and version == self.version + 1:
            self.version = version  # nobody else wrote between: still up to date

    def read(self, store: Store, cached: Container[ReleaseKey]) -> Desired | None:
        """What changed since the last read; None when nothing did (blocking:
        `AsyncStore.read_desired` runs it on the store's executor)."""
        version = store.desired_version()
        if version == self.version:
            return None
        full = self.version < 0
        rows: dict[str, list[Any]] = dict(store.snapshot_rows())
        pending = store.releases_in("pending")
        rows["pending"] = sorted((r.app_id, r.version) for r in pending)
        rows["domains"] = [(d.app_id, d.hostname) for d in store.domains()]
        rows["certificates"] = [
            (c.app_id, TlsCertificate(hostnames=[c.hostname], cert_pem=c.cert_pem,
                                      key_pem=c.key_pem))
            for c in store.certificates()
        ]  # fmt: skip
        rows["challenges"] = [
            (ch.app_id, ch.token, ch.key_authorization) for ch in store.acme_challenges()
        ]
        names: dict[Any, int] = {}  # app name -> id, for the placements' groups
        changed: set[int] = set()
        for table in _TABLES:
            if rows[table] == self._rows.get(table):
                continue
            new = _grouped(rows[table], key=1 if table == "placements" else 0)
            old = self._groups[table]
            keys = {k for k in new.keys() | old.keys() if new.get(k) != old.get(k)}
            if table == "placements":
                names = names or {r[1]: r[0] for r in rows["apps"]}
                changed.update(names[k] for k in keys if k in names)
                # An app deleted meanwhile: its id comes from the apps table's change.
            else:
                changed.update(keys)
            self._groups[table] = new
        self._rows = rows
        self._pending = {}
        for r in pending:
            self._pending[r.app_id] = (*self._pending.get(r.app_id, ()), r)
        out = Desired(version=version, full=full)
        apps = self._groups["apps"]
        for app_id in sorted(apps) if full else sorted(changed):
            out.apps[app_id] = self._inputs(app_id)
            row = apps.get(app_id)
            out.placements[app_id] = (
                [Placement(*p) for p in self._groups["placements"].get(row[0][1], ())]
                if row is not None
                else []
            )
        needed: set[ReleaseKey] = set()
        for app_id, inputs in out.apps.items():
            if inputs is not None:
                needed |= inputs.needed(out.placements[app_id])
        needed = {k for k in needed if k not in cached}
        out.fetched = {
            (r.app_id, r.version): r for r in self._pending_rows() if r.app_id in out.apps
        }
        needed -= out.fetched.keys()
        out.fetched.update({(r.app_id, r.version): r for r in store.releases_for(needed)})
        self.version = version
        return out

    def _pending_rows(self) -> list[ReleaseRow]:
        return [r for rs in self._pending.values() for r in rs]

    def _inputs(self, app_id: int) -> AppInputs | None:
        g = self._groups
        rows = g["apps"].get(app_id)
        if rows is None:
            return None
        i, name, owner, suspended, current, created, quota = rows[0]
        formation, sizes = {}, {}
        for _, ptype, qty, mem in g["formation"].get(app_id, ()):
            formation[ptype] = qty
            if mem:
                sizes[ptype] = mem
        return AppInputs(
            row=AppRow(id=i, name=name, owner_id=owner, suspended=bool(suspended),
                       current_release=current, created_at=created,
                       data_quota_mb=quota or 0),
            formation=formation,
            sizes=sizes,
            pending=self._pending.get(app_id, ()),
            domains=tuple(h for _, h in g["domains"].get(app_id, ())),
            certificates=tuple(c for _, c in g["certificates"].get(app_id, ())),
            challenges=tuple((tok, ka) for _, tok, ka in g["challenges"].get(app_id, ())),
        )  # fmt: skip


def wants(
    app: AppInputs, releases: Mapping[ReleaseKey, ReleaseRow], memory_mb: int
) -> tuple[list[Want], ReleaseRow | None]:
    """(what should run of the app, its serving release if known)."""
    a = app.row
    serving = None
    if a.current_release is not None:
        serving = releases.get((a.id, a.current_release))
    if a.suspended:
        return [], serving
    out: list[Want] = []
    for rel in ([serving] if serving is not None else []) + list(app.pending):
        for ptype, qty in app.formation.items():
            if ptype in rel.spec.processes and qty > 0:
                size = app.sizes.get(ptype) or memory_mb
                out.append(Want(a.name, rel.version, ptype, qty, size))
    return out, serving
