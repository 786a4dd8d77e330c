"""Desired state for one reconcile pass: read in one go, turned into Wants purely.

`Reader.read` runs on the store's executor (`AsyncStore.read_desired`) and
issues a fixed handful of queries whatever the number of apps: apps,
formations, placements, pending releases, domains, and the release rows not
yet cached. The three big ones come as
plain sorted tuples (`Store.snapshot_rows`, roost.controller.store_snapshot)
and are compared with the previous read's: when they are equal, the previous
objects are reused and the read says `unchanged`, so the scheduler lease
holder's periodic re-read (it must notice changes made through another
replica's API) costs a fetch and a compare, not thousands of objects.

Release rows never change after creation (only their status does, which
the reconcile takes from `apps` and the pending list), so they are cached by
(app id, version) for good.

`wants` is pure: which (app, release, process type, count) should run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from roost.controller.scheduler import Placement, Want
from roost.controller.store import AppRow, NotFound, ReleaseRow, Store
from roost.wire.messages import TlsCertificate

ReleaseKey = tuple[int, int]  # (app id, version)


@dataclass
class Desired:
    apps: list[AppRow]
    formations: dict[int, dict[str, int]]
    pending: list[ReleaseRow]
    placements: list[Placement]
    domains: dict[int, tuple[str, ...]]
    certificates: dict[int, tuple[TlsCertificate, ...]] = field(default_factory=dict)
    # Rows read now because the cache lacked them.
    fetched: dict[ReleaseKey, ReleaseRow] = field(default_factory=dict)
    # Memory (MB) per app and process type where the formation sets one.
    sizes: dict[int, dict[str, int]] = field(default_factory=dict)
    # Apps, formations, placements, domains and pending releases are exactly
    # what the previous read found.
    unchanged: bool = False

    @property
    def app_ids(self) -> dict[str, int]:
        return {a.name: a.id for a in self.apps}


def needed_releases(
    apps: list[AppRow], pending: list[ReleaseRow], placements: list[Placement]
) -> set[ReleaseKey]:
    ids = {a.name: a.id for a in apps}
    keys = {(a.id, a.current_release) for a in apps if a.current_release is not None}
    keys.update((r.app_id, r.version) for r in pending)
    keys.update((ids[p.app], p.release) for p in placements if p.app in ids)
    return keys


class Reader:
    """Reads desired state, reusing what did not change since its last read."""

    def __init__(self) -> None:
        self._rows: dict[str, list[Any]] = {}
        self._apps: list[AppRow] = []
        self._formations: dict[int, dict[str, int]] = {}
        self._sizes: dict[int, dict[str, int]] = {}
        self._placements: list[Placement] = []
        self._other: tuple[object, ...] = ()

    def wrote_placements(self, placed: list[Placement]) -> None:
        """The lease holder wrote these: the next read need not call them a change."""
        if "placements" in self._rows:
            self._rows["placements"] = sorted(
                (p.instance_id, p.app, p.release, p.process_type, p.idx, p.host_id) for p in placed
            )
            self._placements = sorted(placed, key=lambda p: p.instance_id)

    def read(self, store: Store, cached: set[ReleaseKey]) -> Desired:
        """Everything a reconcile pass needs (blocking: `AsyncStore.read_desired`
        runs it on the store's executor)."""
        rows = store.snapshot_rows()
        changed = False
        if rows["apps"] != self._rows.get("apps"):
            self._apps = [
                AppRow(
                    id=i, name=n, owner_id=o, suspended=bool(s), current_release=cr, created_at=ca
                )
                for i, n, o, s, cr, ca in rows["apps"]
            ]
            changed = True
        if rows["formation"] != self._rows.get("formation"):
            formations: dict[int, dict[str, int]] = {}
            sizes: dict[int, dict[str, int]] = {}
            for app_id, ptype, qty, mem in rows["formation"]:
                formations.setdefault(app_id, {})[ptype] = qty
                if mem:
                    sizes.setdefault(app_id, {})[ptype] = mem
            self._formations, self._sizes = formations, sizes
            changed = True
        if rows["placements"] != self._rows.get("placements"):
            self._placements = [Placement(*r) for r in rows["placements"]]
            changed = True
        self._rows = rows
        pending = store.releases_in("pending")
        domains: dict[int, list[str]] = {}
        for d in store.domains():
            domains.setdefault(d.app_id, []).append(d.hostname)
        doms = {k: tuple(v) for k, v in domains.items()}
        certs: dict[int, list[TlsCertificate]] = {}
        for c in store.certificates():
            certs.setdefault(c.app_id, []).append(
                TlsCertificate(hostnames=[c.hostname], cert_pem=c.cert_pem, key_pem=c.key_pem)
            )
        cert_map = {k: tuple(v) for k, v in certs.items()}
        other = (doms, cert_map, [(r.app_id, r.version) for r in pending])
        changed = changed or other != self._other
        self._other = other
        out = Desired(
            apps=self._apps,
            formations=self._formations,
            sizes=self._sizes,
            pending=pending,
            placements=list(self._placements),
            domains=doms,
            certificates=cert_map,
            unchanged=not changed,
        )
        out.fetched = {(r.app_id, r.version): r for r in pending}
        for key in needed_releases(out.apps, pending, out.placements) - cached - set(out.fetched):
            try:
                out.fetched[key] = store.release(*key)
            except NotFound:  # deleted meanwhile: the next pass will not need it
                continue
        return out


def wants(
    d: Desired, releases: dict[ReleaseKey, ReleaseRow], memory_mb: int
) -> tuple[list[Want], dict[str, ReleaseRow], list[tuple[str, ReleaseRow]]]:
    """(wants, serving release by app name, pending (app name, release) pairs)."""
    names = {a.id: a.name for a in d.apps}
    serving: dict[str, ReleaseRow] = {}
    for a in d.apps:
        if a.current_release is not None:
            rel = releases.get((a.id, a.current_release))
            if rel is not None:
                serving[a.name] = rel
    pending = [(names[r.app_id], r) for r in d.pending if r.app_id in names]
    pending_by_app: dict[str, list[ReleaseRow]] = {}
    for name, r in pending:
        pending_by_app.setdefault(name, []).append(r)
    out: list[Want] = []
    for a in d.apps:
        if a.suspended:
            continue
        rels = [serving[a.name]] if a.name in serving else []
        rels += pending_by_app.get(a.name, [])
        formation = d.formations.get(a.id, {})
        sizes = d.sizes.get(a.id, {})
        for rel in rels:
            for ptype, qty in formation.items():
                if ptype in rel.spec.processes and qty > 0:
                    size = sizes.get(ptype) or memory_mb
                    out.append(Want(a.name, rel.version, ptype, qty, size))
    return out, serving, pending
