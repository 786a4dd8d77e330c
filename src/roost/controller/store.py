"""The controller's access to the state database (SQLAlchemy Core).

Thin and synchronous: each function is one short transaction. Controllers are
the only writers; every replica may run these.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Engine, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from roost.appspec.model import AppSpec
from roost.controller import logretention
from roost.controller.scheduler import Placement
from roost.controller.secretbox import SecretBox
from roost.controller.store_access import AccessStore, Conflict, NotFound
from roost.controller.store_acme import AcmeStore
from roost.controller.store_cron import CronStore
from roost.controller.store_deploys import (
    BuildMove,
    BuildRow,
    DeployStore,
    insert_release,
    next_version,
)
from roost.controller.store_domains import DomainStore
from roost.controller.store_drains import DrainStore, trim_log_lines
from roost.controller.store_holds import HoldStore, by_user, forget_holds
from roost.controller.store_hostdrains import HostDrainStore
from roost.controller.store_images import ImageCopyStore
from roost.controller.store_logs import insert_log_lines
from roost.controller.store_notify import NotifyStore
from roost.controller.store_pairs import PairStore
from roost.controller.store_replace import ReplaceStore
from roost.controller.store_snapshot import PLACEMENTS, SnapshotStore, bump_desired
from roost.state import tables as t
from roost.wire.messages import LogLine, StaticRoute


@dataclass(frozen=True)
class AppRow:
    id: int
    name: str
    owner_id: int
    suspended: bool
    current_release: int | None
    created_at: float
    # Its data directory's own quota in MiB; 0: the platform's (issue 17).
    data_quota_mb: int = 0

    @property
    def key(self) -> str:
        """This incarnation of the name, "<id>-<created_at in ms>": roles key an
        app's directories by it (roost.appdirs). Not the id alone: SQLite hands
        a deleted highest id out again; the creation time never comes back."""
        return f"{self.id}-{round(self.created_at * 1000)}"


@dataclass(frozen=True)
class ReleaseRow:
    app_id: int
    version: int
    build_id: str | None
    status: str
    image_digest: str
    static_digest: str
    spec: AppSpec
    lock: str
    description: str
    created_at: float
    config: dict[str, str]
    static_routes: list[StaticRoute]
    promoted_at: float | None = None  # when it went live (wall clock)


def _app(row: Any) -> AppRow:
    return AppRow(
        id=row.id,
        name=row.name,
        owner_id=row.owner_id,
        suspended=bool(row.suspended),
        current_release=row.current_release,
        created_at=row.created_at,
        data_quota_mb=row.data_quota_mb or 0,
    )


def _release(row: Any) -> ReleaseRow:
    return ReleaseRow(
        app_id=row.app_id,
        version=row.version,
        build_id=row.build_id,
        status=row.status,
        image_digest=row.image_digest,
        static_digest=row.static_digest,
        spec=msgspec.json.decode(row.spec_json, type=AppSpec),
        lock=row.lock,
        description=row.description,
        created_at=row.created_at,
        config=json.loads(row.config_json or "{}"),
        static_routes=msgspec.json.decode(row.static_json or "[]", type=list[StaticRoute]),
        promoted_at=row.promoted_at,
    )


@dataclass(frozen=True)
class HostRecord:
    """A host as its heartbeat describes it (the `hosts` table's row)."""

    host_id: str
    hostname: str
    addresses: str  # JSON list
    memory_mb: int
    cpus: int


__all__ = ["AccessStore", "BuildMove", "BuildRow", "Conflict", "NotFound", "Store"]

# Release keys per query of `releases_for`: two bound values each, well
# under SQLite's limit (32,766 since 3.32) and PostgreSQL's (65,535).
_KEYS_PER_QUERY = 2000


class Store(
    AccessStore,
    AcmeStore,
    CronStore,
    DeployStore,
    DomainStore,
    DrainStore,
    HoldStore,
    HostDrainStore,
    ImageCopyStore,
    NotifyStore,
    PairStore,
    ReplaceStore,
    SnapshotStore,
):
    def __init__(self, engine: Engine, secrets: SecretBox | None = None) -> None:
        self.engine = engine
        # Seals what is stored secret (TLS private keys); None: none can be stored.
        self.secrets = secrets
        self._opened_keys = {}
        # Apps lines were appended for since the last trim_logs (any thread).
        self._logged: set[int] = set()
        self._logged_lock = threading.Lock()

    # ------------------------------------------------------------ apps

    def create_app(self, name: str, owner_id: int) -> AppRow:
        with self.engine.begin() as c:
            if c.execute(select(t.apps.c.id).where(t.apps.c.name == name)).first():
                raise Conflict(f"app {name} already exists")
            # The counter, not the table's max: a deleted app's id (its tenant
            # uid) is never given again. One UPDATE: atomic on both databases.
            app_id = c.execute(
                update(t.id_counters)
                .where(t.id_counters.c.name == "apps")
                .values(value=t.id_counters.c.value + 1)
                .returning(t.id_counters.c.value)
            ).scalar_one()
            c.execute(
                insert(t.apps).values(
                    id=app_id, name=name, owner_id=owner_id, created_at=time.time()
                )
            )
            bump_desired(c)
        return self.app(name)

    def app(self, name: str) -> AppRow:
        with self.engine.connect() as c:
            row = c.execute(select(t.apps).where(t.apps.c.name == name)).first()
        if row is None:
            raise NotFound(f"no app named {name}")
        return _app(row)

    def app_by_id(self, app_id: int) -> AppRow:
        with self.engine.connect() as c:
            row = c.execute(select(t.apps).where(t.apps.c.id == app_id)).first()
        if row is None:
            raise NotFound(f"no app with id {app_id}")
        return _app(row)

    def apps(self, owner_id: int | None = None) -> list[AppRow]:
        q = select(t.apps).order_by(t.apps.c.name)
        if owner_id is not None:
            q = q.where(t.apps.c.owner_id == owner_id)
        with self.engine.connect() as c:
            rows = c.execute(q).all()  # one fetchall: far cheaper than row by row
        return [_app(r) for r in rows]

    def delete_app(self, name: str) -> None:
        app = self.app(name)
        with self.engine.begin() as c:
            for table in (
                t.log_lines,
                t.placements,
                t.formation,
                t.config_vars,
                t.releases,
                t.builds,
                t.events,
                t.domains,
                t.certificates,
                t.collaborators,
                t.service_bindings,
            ):
                c.execute(delete(table).where(table.c.app_id == app.id))
            c.execute(delete(t.apps).where(t.apps.c.id == app.id))
            forget_holds(c, app.id)
            bump_desired(c)

    def set_data_quota(self, app_id: int, quota_mb: int | None) -> None:
        """The app's own data quota in MiB (None: the platform's again).
        Counted as a change to desired state: assignments carry it."""
        with self.engine.begin() as c:
            c.execute(update(t.apps).where(t.apps.c.id == app_id).values(data_quota_mb=quota_mb))
            bump_desired(c)

    def set_suspended(self, app_id: int, suspended: bool) -> None:
        """Set by hand (or a host restore): no app restore's end undoes it."""
        with self.engine.begin() as c:
            c.execute(update(t.apps).where(t.apps.c.id == app_id).values(suspended=suspended))
            by_user(c, app_id)
            bump_desired(c)

    # ------------------------------------------------------------ releases

    def create_release(
        self,
        app_id: int,
        build_id: str,
        image_digest: str,
        static_digest: str,
        spec: AppSpec,
        lock: str,
        description: str,
        config: dict[str, str] | None = None,
        static_routes: list[StaticRoute] | None = None,
    ) -> int:
        """A new pending release; `config` defaults to the app's config vars now."""
        if config is None:
            config = self.config_vars(app_id)
        with self.engine.begin() as c:
            version = next_version(c, app_id)
            insert_release(
                c, app_id, version, build_id, image_digest, static_digest, spec, lock,
                description, config, static_routes or [],
            )  # fmt: skip
            bump_desired(c)
        return version

    def copy_release(
        self, app_id: int, source: int, description: str, config: dict[str, str] | None = None
    ) -> int:
        """A new pending release running `source`'s image (rollback, config change, restart)."""
        base = self.release(app_id, source)
        return self.create_release(
            app_id,
            base.build_id or "",
            base.image_digest,
            base.static_digest,
            base.spec,
            base.lock,
            description,
            config=base.config if config is None else config,
            static_routes=base.static_routes,
        )

    def release(self, app_id: int, version: int) -> ReleaseRow:
        with self.engine.connect() as c:
            row = c.execute(
                select(t.releases).where(
                    t.releases.c.app_id == app_id, t.releases.c.version == version
                )
            ).first()
        if row is None:
            raise NotFound(f"no release v{version}")
        return _release(row)

    def releases(self, app_id: int) -> list[ReleaseRow]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.releases)
                .where(t.releases.c.app_id == app_id)
                .order_by(t.releases.c.version.desc())
            )
            return [_release(r) for r in rows]

    def releases_for(self, keys: Iterable[tuple[int, int]]) -> list[ReleaseRow]:
        """The releases (app id, version) that exist among `keys`, a few queries for thousands."""
        wanted = sorted(set(keys))
        out: list[ReleaseRow] = []
        key = tuple_(t.releases.c.app_id, t.releases.c.version)
        with self.engine.connect() as c:
            for i in range(0, len(wanted), _KEYS_PER_QUERY):
                rows = c.execute(select(t.releases).where(key.in_(wanted[i : i + _KEYS_PER_QUERY])))
                out.extend(_release(r) for r in rows)
        return out

    def releases_in(self, status: str) -> list[ReleaseRow]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.releases).where(t.releases.c.status == status))
            return [_release(r) for r in rows]

    # ------------------------------------------------------------ formation and config

    def formation(self, app_id: int) -> dict[str, int]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.formation).where(t.formation.c.app_id == app_id))
            return {r.process_type: r.quantity for r in rows}

    def formation_sizes(self, app_id: int) -> dict[str, int]:
        """Memory (MB) per process type; 0: the platform's default."""
        with self.engine.connect() as c:
            rows = c.execute(select(t.formation).where(t.formation.c.app_id == app_id))
            return {r.process_type: r.memory_mb for r in rows}

    def set_formation(
        self, app_id: int, quantities: dict[str, int], sizes: dict[str, int] | None = None
    ) -> None:
        """Set counts (and, for the types in `sizes`, memory; others keep theirs)."""
        sizes = sizes or {}
        with self.engine.begin() as c:
            old = {
                r.process_type: r
                for r in c.execute(select(t.formation).where(t.formation.c.app_id == app_id))
            }
            for ptype in sorted(set(quantities) | set(sizes)):
                was = old.get(ptype)
                qty = quantities.get(ptype, was.quantity if was is not None else 0)
                mem = sizes.get(ptype, was.memory_mb if was is not None else 0)
                c.execute(
                    delete(t.formation).where(
                        t.formation.c.app_id == app_id, t.formation.c.process_type == ptype
                    )
                )
                c.execute(
                    insert(t.formation).values(
                        app_id=app_id, process_type=ptype, quantity=qty, memory_mb=mem
                    )
                )
            bump_desired(c)

    def config_vars(self, app_id: int) -> dict[str, str]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.config_vars).where(t.config_vars.c.app_id == app_id))
            return {r.key: r.value for r in rows}

    def update_config(self, app_id: int, changes: dict[str, str | None]) -> dict[str, str]:
        """Set (value) or unset (None) config vars; returns the new full set."""
        with self.engine.begin() as c:
            for key, value in changes.items():
                c.execute(
                    delete(t.config_vars).where(
                        t.config_vars.c.app_id == app_id, t.config_vars.c.key == key
                    )
                )
                if value is not None:
                    c.execute(insert(t.config_vars).values(app_id=app_id, key=key, value=value))
        return self.config_vars(app_id)

    # ------------------------------------------------------------ placements

    def placements(self, app: str | None = None) -> list[Placement]:
        """Every placement, or one app's."""
        q = PLACEMENTS if app is None else PLACEMENTS.where(t.apps.c.name == app)
        with self.engine.connect() as c:
            rows = c.execute(q).all()  # one fetchall: far cheaper than row by row
        return [Placement(*r) for r in rows]

    def drop_placements(self, app_id: int, process_type: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                delete(t.placements).where(
                    t.placements.c.app_id == app_id, t.placements.c.process_type == process_type
                )
            )
            bump_desired(c)

    def replace_placements(
        self, old: list[Placement], new: list[Placement], app_ids: dict[str, int]
    ) -> int | None:
        """Write the difference; the desired-state count after it (None: nothing to write)."""
        old_ids = {p.instance_id for p in old}
        new_ids = {p.instance_id for p in new}
        gone = old_ids - new_ids
        added = [p for p in new if p.instance_id not in old_ids]
        if not gone and not added:
            return None
        with self.engine.begin() as c:
            if gone:
                c.execute(delete(t.placements).where(t.placements.c.instance_id.in_(gone)))
            now = time.time()
            if added:
                c.execute(
                    insert(t.placements),
                    [
                        {"instance_id": p.instance_id, "app_id": app_ids[p.app],
                         "release": p.release, "process_type": p.process_type, "idx": p.idx,
                         "host_id": p.host_id, "created_at": now}
                        for p in added
                    ],
                )  # fmt: skip
            return bump_desired(c)

    # ------------------------------------------------------------ hosts

    def upsert_hosts(self, hosts: list[HostRecord]) -> None:
        """Record hosts seen coming up: a batch in three statements, not three per host."""
        if not hosts:
            return
        now = time.time()
        rows = {
            h.host_id: {"b_id": h.host_id, "b_hostname": h.hostname, "b_addresses": h.addresses,
                        "b_memory_mb": h.memory_mb, "b_cpus": h.cpus, "b_now": now}
            for h in hosts
        }  # fmt: skip
        cols = ("hostname", "addresses", "memory_mb", "cpus")
        with self.engine.begin() as c:
            known = set(
                c.execute(select(t.hosts.c.id).where(t.hosts.c.id.in_(list(rows)))).scalars()
            )
            if known:
                c.execute(
                    update(t.hosts)
                    .where(t.hosts.c.id == bindparam("b_id"))
                    .values(last_seen=bindparam("b_now"), **{k: bindparam(f"b_{k}") for k in cols}),
                    [r for hid, r in rows.items() if hid in known],
                )
            new = [
                {"id": hid, "first_seen": now, "last_seen": now, **{k: r[f"b_{k}"] for k in cols}}
                for hid, r in rows.items()
                if hid not in known
            ]
            if not new:
                return
            try:
                with c.begin_nested():
                    c.execute(insert(t.hosts), new)
            except IntegrityError:
                # Every replica records a new host's first heartbeat: where
                # another inserted the row first, that is all this wanted.
                for row in new:
                    with contextlib.suppress(IntegrityError), c.begin_nested():
                        c.execute(insert(t.hosts).values(**row))

    def hosts(self) -> list[Any]:
        with self.engine.connect() as c:
            return list(c.execute(select(t.hosts).order_by(t.hosts.c.id)))

    # ------------------------------------------------------------ logs and events

    def append_logs(self, lines: list[LogLine]) -> None:
        with self.engine.begin() as c:
            app_ids = insert_log_lines(c, lines)
        self._note_logged(app_ids)

    def _note_logged(self, app_ids: set[int]) -> None:
        with self._logged_lock:
            self._logged.update(app_ids)

    def logs(
        self,
        app_id: int,
        after_id: int = 0,
        limit: int = 1500,
        process: str | None = None,
        source: str | None = None,
    ) -> list[Any]:
        q = select(t.log_lines).where(t.log_lines.c.app_id == app_id, t.log_lines.c.id > after_id)
        if process:
            q = q.where(t.log_lines.c.process == process)
        if source:
            q = q.where(t.log_lines.c.source == source)
        with self.engine.connect() as c:
            if after_id == 0:
                rows = list(c.execute(q.order_by(t.log_lines.c.id.desc()).limit(limit)))
                rows.reverse()
                return rows
            return list(c.execute(q.order_by(t.log_lines.c.id).limit(limit)))

    def trim_logs(self, keep: int) -> None:
        """Keep the newest `keep` lines (or the app's own retention) of each
        app this store wrote lines for since its last trim: every replica
        trims what it wrote, and an app that logged nothing is not looked
        at; and drop lines past the age of apps that set one."""
        with self._logged_lock:
            apps, self._logged = self._logged, set()
        trims = logretention.plan(apps, self.log_retention(), keep, time.time())
        with self.engine.begin() as c:
            trim_log_lines(c, trims)

    def add_event(self, kind: str, message: str, app_id: int | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(t.events).values(ts=time.time(), app_id=app_id, kind=kind, message=message)
            )

    def events(self, app_ids: set[int] | None = None, limit: int = 100) -> list[Any]:
        q = (
            select(t.events, t.apps.c.name.label("app"))
            .outerjoin(t.apps, t.apps.c.id == t.events.c.app_id)
            .order_by(t.events.c.id.desc())
            .limit(limit)
        )
        if app_ids is not None:
            q = q.where(t.events.c.app_id.in_(app_ids))
        with self.engine.connect() as c:
            return list(c.execute(q))

    # ------------------------------------------------------------ service bindings

    def bind_service(self, app_id: int, kind: str, sealed: str, host: str = "") -> None:
        with self.engine.begin() as c:
            c.execute(
                delete(t.service_bindings).where(
                    t.service_bindings.c.app_id == app_id, t.service_bindings.c.kind == kind
                )
            )
            c.execute(
                insert(t.service_bindings).values(
                    app_id=app_id, kind=kind, secret=sealed, created_at=time.time(), host=host
                )
            )

    def set_service_host(self, app_id: int, kind: str, host: str) -> None:
        """Record the holder of a binding written before holders were (0016)."""
        with self.engine.begin() as c:
            c.execute(
                update(t.service_bindings)
                .where(t.service_bindings.c.app_id == app_id, t.service_bindings.c.kind == kind)
                .values(host=host)
            )

    def unbind_service(self, app_id: int, kind: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                delete(t.service_bindings).where(
                    t.service_bindings.c.app_id == app_id, t.service_bindings.c.kind == kind
                )
            )

    def service_bindings(self, app_id: int | None = None) -> list[Any]:
        q = select(t.service_bindings).order_by(t.service_bindings.c.kind)
        if app_id is not None:
            q = q.where(t.service_bindings.c.app_id == app_id)
        with self.engine.connect() as c:
            return list(c.execute(q))
