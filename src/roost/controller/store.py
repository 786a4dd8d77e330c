"""The controller's access to the state database (SQLAlchemy Core).

Thin and synchronous: each function is one short transaction. Controllers are
the only writers; every replica may run these.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Engine, delete, func, insert, select, update

from roost.appspec.model import AppSpec
from roost.controller.scheduler import Placement
from roost.state import tables as t
from roost.wire.messages import LogLine


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


@dataclass(frozen=True)
class AppRow:
    id: int
    name: str
    owner_id: int
    suspended: bool
    current_release: int | None
    created_at: float


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


@dataclass(frozen=True)
class BuildRow:
    id: str
    app_id: int
    status: str
    created_at: float
    finished_at: float | None
    error: str
    release: int | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _app(row: Any) -> AppRow:
    return AppRow(
        id=row.id,
        name=row.name,
        owner_id=row.owner_id,
        suspended=bool(row.suspended),
        current_release=row.current_release,
        created_at=row.created_at,
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
    )


def _build(row: Any) -> BuildRow:
    return BuildRow(
        id=row.id,
        app_id=row.app_id,
        status=row.status,
        created_at=row.created_at,
        finished_at=row.finished_at,
        error=row.error,
        release=row.release,
    )


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------ accounts

    def create_account(self, email: str, password_hash: str = "", is_admin: bool = False) -> int:
        with self.engine.begin() as c:
            if c.execute(select(t.accounts.c.id).where(t.accounts.c.email == email)).first():
                raise Conflict(f"account {email} already exists")
            r = c.execute(
                insert(t.accounts).values(
                    email=email,
                    password_hash=password_hash,
                    is_admin=is_admin,
                    created_at=time.time(),
                )
            )
            return int(r.inserted_primary_key[0])  # type: ignore[index]

    def account_by_email(self, email: str) -> Any:
        with self.engine.connect() as c:
            return c.execute(select(t.accounts).where(t.accounts.c.email == email)).first()

    def issue_token(self, account_id: int, name: str = "") -> str:
        token = "rst_" + secrets.token_urlsafe(32)
        with self.engine.begin() as c:
            c.execute(
                insert(t.tokens).values(
                    account_id=account_id,
                    token_hash=hash_token(token),
                    name=name,
                    created_at=time.time(),
                )
            )
        return token

    def account_for_token(self, token: str) -> Any:
        with self.engine.connect() as c:
            return c.execute(
                select(t.accounts)
                .join(t.tokens, t.tokens.c.account_id == t.accounts.c.id)
                .where(t.tokens.c.token_hash == hash_token(token), t.tokens.c.revoked_at.is_(None))
            ).first()

    # ------------------------------------------------------------ apps

    def create_app(self, name: str, owner_id: int) -> AppRow:
        with self.engine.begin() as c:
            if c.execute(select(t.apps.c.id).where(t.apps.c.name == name)).first():
                raise Conflict(f"app {name} already exists")
            c.execute(insert(t.apps).values(name=name, owner_id=owner_id, created_at=time.time()))
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
            return [_app(r) for r in c.execute(q)]

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
            ):
                c.execute(delete(table).where(table.c.app_id == app.id))
            c.execute(delete(t.apps).where(t.apps.c.id == app.id))

    def set_suspended(self, app_id: int, suspended: bool) -> None:
        with self.engine.begin() as c:
            c.execute(update(t.apps).where(t.apps.c.id == app_id).values(suspended=suspended))

    # ------------------------------------------------------------ builds

    def create_build(self, build_id: str, app_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(t.builds).values(
                    id=build_id, app_id=app_id, status="building", created_at=time.time(), error=""
                )
            )

    def build(self, build_id: str) -> BuildRow:
        with self.engine.connect() as c:
            row = c.execute(select(t.builds).where(t.builds.c.id == build_id)).first()
        if row is None:
            raise NotFound(f"no build {build_id}")
        return _build(row)

    def builds_in(self, status: str) -> list[BuildRow]:
        with self.engine.connect() as c:
            return [
                _build(r) for r in c.execute(select(t.builds).where(t.builds.c.status == status))
            ]

    def finish_build(
        self, build_id: str, status: str, error: str = "", release: int | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error}
        if status in ("succeeded", "failed"):
            values["finished_at"] = time.time()
        if release is not None:
            values["release"] = release
        with self.engine.begin() as c:
            c.execute(update(t.builds).where(t.builds.c.id == build_id).values(**values))

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
    ) -> int:
        with self.engine.begin() as c:
            top = c.execute(
                select(func.max(t.releases.c.version)).where(t.releases.c.app_id == app_id)
            ).scalar()
            version = int(top or 0) + 1
            # A newer deploy supersedes one still rolling out.
            c.execute(
                update(t.releases)
                .where(t.releases.c.app_id == app_id, t.releases.c.status == "pending")
                .values(status="failed", description=f"superseded by v{version} before it came up")
            )
            c.execute(
                insert(t.releases).values(
                    app_id=app_id,
                    version=version,
                    build_id=build_id,
                    status="pending",
                    image_digest=image_digest,
                    static_digest=static_digest,
                    spec_json=msgspec.json.encode(spec).decode(),
                    lock=lock,
                    description=description,
                    created_at=time.time(),
                )
            )
        return version

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

    def releases_in(self, status: str) -> list[ReleaseRow]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.releases).where(t.releases.c.status == status))
            return [_release(r) for r in rows]

    def promote(self, app_id: int, version: int) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(t.releases)
                .where(t.releases.c.app_id == app_id, t.releases.c.status == "active")
                .values(status="superseded")
            )
            c.execute(
                update(t.releases)
                .where(t.releases.c.app_id == app_id, t.releases.c.version == version)
                .values(status="active")
            )
            c.execute(update(t.apps).where(t.apps.c.id == app_id).values(current_release=version))

    def fail_release(self, app_id: int, version: int, reason: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(t.releases)
                .where(t.releases.c.app_id == app_id, t.releases.c.version == version)
                .values(status="failed", description=reason)
            )

    # ------------------------------------------------------------ formation and config

    def formation(self, app_id: int) -> dict[str, int]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.formation).where(t.formation.c.app_id == app_id))
            return {r.process_type: r.quantity for r in rows}

    def set_formation(self, app_id: int, quantities: dict[str, int]) -> None:
        with self.engine.begin() as c:
            for ptype, qty in quantities.items():
                c.execute(
                    delete(t.formation).where(
                        t.formation.c.app_id == app_id, t.formation.c.process_type == ptype
                    )
                )
                c.execute(
                    insert(t.formation).values(app_id=app_id, process_type=ptype, quantity=qty)
                )

    def config_vars(self, app_id: int) -> dict[str, str]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.config_vars).where(t.config_vars.c.app_id == app_id))
            return {r.key: r.value for r in rows}

    # ------------------------------------------------------------ placements

    def placements(self) -> list[Placement]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.placements, t.apps.c.name).join(
                    t.apps, t.apps.c.id == t.placements.c.app_id
                )
            )
            return [
                Placement(
                    instance_id=r.instance_id,
                    app=r.name,
                    release=r.release,
                    process_type=r.process_type,
                    idx=r.idx,
                    host_id=r.host_id,
                )
                for r in rows
            ]

    def replace_placements(
        self, old: list[Placement], new: list[Placement], app_ids: dict[str, int]
    ) -> None:
        old_ids = {p.instance_id for p in old}
        new_ids = {p.instance_id for p in new}
        gone = old_ids - new_ids
        added = [p for p in new if p.instance_id not in old_ids]
        if not gone and not added:
            return
        with self.engine.begin() as c:
            if gone:
                c.execute(delete(t.placements).where(t.placements.c.instance_id.in_(gone)))
            now = time.time()
            for p in added:
                c.execute(
                    insert(t.placements).values(
                        instance_id=p.instance_id,
                        app_id=app_ids[p.app],
                        release=p.release,
                        process_type=p.process_type,
                        idx=p.idx,
                        host_id=p.host_id,
                        created_at=now,
                    )
                )

    # ------------------------------------------------------------ hosts

    def upsert_host(
        self, host_id: str, hostname: str, addresses: str, memory_mb: int, cpus: int
    ) -> None:
        now = time.time()
        with self.engine.begin() as c:
            r = c.execute(
                update(t.hosts)
                .where(t.hosts.c.id == host_id)
                .values(
                    hostname=hostname,
                    addresses=addresses,
                    memory_mb=memory_mb,
                    cpus=cpus,
                    last_seen=now,
                )
            )
            if r.rowcount == 0:
                c.execute(
                    insert(t.hosts).values(
                        id=host_id,
                        hostname=hostname,
                        addresses=addresses,
                        memory_mb=memory_mb,
                        cpus=cpus,
                        first_seen=now,
                        last_seen=now,
                    )
                )

    def hosts(self) -> list[Any]:
        with self.engine.connect() as c:
            return list(c.execute(select(t.hosts).order_by(t.hosts.c.id)))

    # ------------------------------------------------------------ logs and events

    def append_logs(self, lines: list[LogLine]) -> None:
        names = {ln.app for ln in lines}
        with self.engine.begin() as c:
            ids = {
                r.name: r.id
                for r in c.execute(
                    select(t.apps.c.id, t.apps.c.name).where(t.apps.c.name.in_(names))
                )
            }
            rows = [
                {
                    "app_id": ids[ln.app],
                    "ts": ln.ts,
                    "source": ln.source,
                    "process": ln.process,
                    "stream": ln.stream,
                    "line": ln.line,
                }
                for ln in lines
                if ln.app in ids
            ]
            if rows:
                c.execute(insert(t.log_lines), rows)

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
        """Keep the newest `keep` lines per app (never fewer)."""
        with self.engine.begin() as c:
            for (app_id,) in c.execute(select(t.apps.c.id)):
                cutoff = c.execute(
                    select(t.log_lines.c.id)
                    .where(t.log_lines.c.app_id == app_id)
                    .order_by(t.log_lines.c.id.desc())
                    .offset(keep)
                    .limit(1)
                ).scalar()
                if cutoff is not None:
                    c.execute(
                        delete(t.log_lines).where(
                            t.log_lines.c.app_id == app_id, t.log_lines.c.id <= cutoff
                        )
                    )

    def add_event(self, kind: str, message: str, app_id: int | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(t.events).values(ts=time.time(), app_id=app_id, kind=kind, message=message)
            )
