"""The deploy's rows: builds and the writes that move a deploy or end a release's rollout.

Every status written here is a `deployflow.Move`, applied as a compare-and-set
on the status it starts from (`UPDATE ... WHERE status = move.before`): a
writer that read an older status changes nothing and learns so from the
return value. A deploy's release is made, and its rollout ended, in one
transaction with its build's move, so a build never names a release that
does not exist, nor stays rolling out for a release that ended.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, Select, delete, func, insert, select, update

from roost.appspec.model import AppSpec
from roost.controller.deployflow import (
    FINAL,
    Event,
    IllegalMove,
    InLine,
    Move,
    ReleaseState,
    Stage,
    ahead_of,
    build_move,
    describe,
    failure_move,
    next_to_start,
    release_move,
    stage_of,
    stalled,
)
from roost.controller.store_access import NotFound
from roost.controller.store_logs import insert_log_lines
from roost.controller.store_snapshot import bump_desired
from roost.state import tables as t
from roost.wire.messages import BuildResult, LogLine, StaticRoute


@dataclass(frozen=True)
class BuildRow:
    id: str
    app_id: int
    status: str
    created_at: float
    finished_at: float | None
    error: str
    release: int | None


def _select_builds() -> Select[Any]:
    """A BuildRow's columns (named: the legacy-status migration test reads
    rows in a schema older than `moved_at`)."""
    b = t.builds.c
    return select(b.id, b.app_id, b.status, b.created_at, b.finished_at, b.error, b.release)


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


@dataclass(frozen=True)
class BuildMove:
    """A deploy's move, written with its release's (Store.end_rollout)."""

    build_id: str
    move: Move
    error: str = ""


def _move_build(
    c: Connection, build_id: str, move: Move, error: str = "", release: int | None = None
) -> bool:
    """Compare-and-set of a build's stage; a final stage stamps finished_at."""
    values: dict[str, Any] = {"status": move.after, "error": error, "moved_at": time.time()}
    if stage_of(move.after).final:
        values["finished_at"] = time.time()
    if release is not None:
        values["release"] = release
    moved = c.execute(
        update(t.builds)
        .where(t.builds.c.id == build_id, t.builds.c.status == move.before)
        .values(**values)
    )
    if moved.rowcount != 1:
        return False
    if move.before == Stage.QUEUED:  # an upload is kept only while its deploy waits
        c.execute(delete(t.build_uploads).where(t.build_uploads.c.build_id == build_id))
    return True


def _roll_back_deploy(c: Connection, app_id: int, bad: int, why: str) -> None:
    """The deploy that made release `bad` (not one a copy was made from),
    when it reads live: rolled back too, so `roost deploys` says so."""
    row = c.execute(
        select(t.builds.c.id, t.builds.c.status)
        .join(t.releases, t.releases.c.build_id == t.builds.c.id)
        .where(
            t.releases.c.app_id == app_id,
            t.releases.c.version == bad,
            t.builds.c.release == bad,
        )
    ).first()
    if row is None:
        return
    with contextlib.suppress(IllegalMove):  # moved by hand, or never live: left alone
        _move_build(c, row.id, build_move(row.status, Event.CRASH_LOOPED), why)


def _lock_app(c: Connection, app_id: int) -> None:
    """Hold the app's row until the transaction ends (a write to it, so SQLite
    takes its write lock and PostgreSQL the row's): two controllers deciding
    about the app's deploys at once take turns, each reading what the other
    wrote."""
    c.execute(update(t.apps).where(t.apps.c.id == app_id).values(name=t.apps.c.name))


def _in_line(c: Connection, app_id: int) -> list[InLine]:
    """The app's deploys that have not ended."""
    ended = [s.value for s in FINAL]
    b = t.builds.c
    rows = c.execute(
        select(b.id, b.status, b.created_at, b.moved_at).where(
            b.app_id == app_id, b.status.not_in(ended)
        )
    )
    return [InLine(r.id, r.status, r.created_at, r.moved_at or 0.0) for r in rows]


def _said(c: Connection, build_id: str, line: str) -> LogLine:
    """A line of a build's log (of its app, by name)."""
    app = c.execute(
        select(t.apps.c.name)
        .join(t.builds, t.builds.c.app_id == t.apps.c.id)
        .where(t.builds.c.id == build_id)
    ).scalar()
    return LogLine(app=app or "", ts=time.time(), process=build_id, source="build", line=line)


def _move_release(c: Connection, app_id: int, version: int, move: Move, **values: Any) -> bool:
    """Compare-and-set of a release's status (and `values` with it)."""
    moved = c.execute(
        update(t.releases)
        .where(
            t.releases.c.app_id == app_id,
            t.releases.c.version == version,
            t.releases.c.status == move.before,
        )
        .values(status=move.after, **values)
    )
    return moved.rowcount == 1


def next_version(c: Connection, app_id: int) -> int:
    top = c.execute(
        select(func.max(t.releases.c.version)).where(t.releases.c.app_id == app_id)
    ).scalar()
    return int(top or 0) + 1


def insert_release(
    c: Connection,
    app_id: int,
    version: int,
    build_id: str,
    image_digest: str,
    static_digest: str,
    spec: AppSpec,
    lock: str,
    description: str,
    config: dict[str, str],
    static_routes: list[StaticRoute],
) -> None:
    """Release `version`, pending. A newer release supersedes one still
    rolling out: that release fails, and so does the deploy that made it."""
    why = f"superseded by v{version} before it came up"
    superseded = release_move(ReleaseState.PENDING, Event.SUPERSEDED)
    pending = c.execute(
        select(t.releases.c.version, t.releases.c.build_id).where(
            t.releases.c.app_id == app_id, t.releases.c.status == superseded.before
        )
    ).all()
    c.execute(
        update(t.releases)
        .where(t.releases.c.app_id == app_id, t.releases.c.status == superseded.before)
        .values(status=superseded.after, description=why)
    )
    for old, deploy in pending:  # usually none, at most one
        row = c.execute(
            select(t.builds.c.status).where(t.builds.c.id == deploy, t.builds.c.release == old)
        ).first()
        if row is None:
            continue  # not a deploy's release: a config change, restart or rollback
        try:
            failed = build_move(row.status, Event.SUPERSEDED)
        except IllegalMove:
            continue  # that deploy ended already: nothing to fail
        _move_build(c, deploy, failed, why)
    c.execute(
        insert(t.releases).values(
            app_id=app_id,
            version=version,
            build_id=build_id,
            status=ReleaseState.PENDING.value,
            image_digest=image_digest,
            static_digest=static_digest,
            spec_json=msgspec.json.encode(spec).decode(),
            lock=lock,
            description=description,
            created_at=time.time(),
            config_json=json.dumps(config, sort_keys=True),
            static_json=msgspec.json.encode(static_routes).decode(),
        )
    )


class DeployStore:
    engine: Engine

    def create_build(self, build_id: str, app_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(t.builds).values(
                    id=build_id,
                    app_id=app_id,
                    status=Stage.BUILDING.value,
                    created_at=time.time(),
                    error="",
                )
            )

    def enqueue_build(self, build_id: str, app_id: int, archive: bytes) -> str | None:
        """Create the build: `building` when none of the app's deploys is
        under way, else `queued` with its upload kept. Returns the deploy it
        waits for (None: it builds now)."""
        with self.engine.begin() as c:
            _lock_app(c, app_id)
            line = _in_line(c, app_id)
            # Last in line, whatever another controller's clock said: the
            # queue's order is the order the lock let deploys in.
            now = max([time.time(), *(b.created_at + 1e-6 for b in line)])
            ahead = ahead_of([*line, InLine(build_id, Stage.QUEUED.value, now)], build_id)
            stage = Stage.QUEUED if ahead else Stage.BUILDING
            c.execute(
                insert(t.builds).values(
                    id=build_id,
                    app_id=app_id,
                    status=stage.value,
                    created_at=now,
                    moved_at=now,
                    error="",
                )
            )
            if ahead:
                c.execute(insert(t.build_uploads).values(build_id=build_id, archive=archive))
        return ahead

    def claim_queued(
        self, app_id: int, limits: Mapping[Stage, float] | None = None
    ) -> tuple[str, bytes] | None:
        """Start the app's next queued deploy when its turn came: moved to
        `building` (compare-and-set, under the app's row lock) and its upload
        taken. (build id, upload), or None when none may start. A deploy
        ahead of it stalled past its stage's limit (`deployflow.stalled`) is
        failed first, saying so in its log."""
        limits = limits or {}
        logged: set[int] = set()
        with self.engine.begin() as c:
            _lock_app(c, app_id)
            line = _in_line(c, app_id)
            for b in (b for b in line if b.id in stalled(line, time.time(), limits)):
                stage = stage_of(b.status)
                why = (
                    f"no progress while {describe(stage)} for {limits[stage]:.0f}s: "
                    "the controller driving it stopped"
                )
                if _move_build(c, b.id, failure_move(b.status), why):
                    logged |= insert_log_lines(c, [_said(c, b.id, f"-----> failed: {why}")])
            claimed = None
            build_id = next_to_start(_in_line(c, app_id))
            if build_id is not None:
                archive = c.execute(
                    select(t.build_uploads.c.archive).where(t.build_uploads.c.build_id == build_id)
                ).scalar()
                if archive is None:  # never so, but it must not hold the app's queue up
                    lost = build_move(Stage.QUEUED, Event.BUILD_FAILED)
                    _move_build(c, build_id, lost, "the upload of this queued deploy was lost")
                elif _move_build(c, build_id, build_move(Stage.QUEUED, Event.STARTED)):
                    claimed = (build_id, bytes(archive))
        self._note_logged(logged)
        return claimed

    def apps_with_queued(self) -> list[int]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.builds.c.app_id).where(t.builds.c.status == Stage.QUEUED.value).distinct()
            )
            return sorted(r.app_id for r in rows)

    def build(self, build_id: str) -> BuildRow:
        with self.engine.connect() as c:
            row = c.execute(_select_builds().where(t.builds.c.id == build_id)).first()
        if row is None:
            raise NotFound(f"no build {build_id}")
        return _build(row)

    def builds_in(self, status: str) -> list[BuildRow]:
        with self.engine.connect() as c:
            return [
                _build(r) for r in c.execute(_select_builds().where(t.builds.c.status == status))
            ]

    def builds_of(self, app_id: int, limit: int) -> list[BuildRow]:
        """An app's newest `limit` builds, newest first."""
        with self.engine.connect() as c:
            rows = c.execute(
                _select_builds()
                .where(t.builds.c.app_id == app_id)
                .order_by(t.builds.c.created_at.desc(), t.builds.c.id.desc())
                .limit(limit)
            )
            return [_build(r) for r in rows]

    def move_build(
        self, build_id: str, move: Move, error: str = "", lines: Sequence[LogLine] = ()
    ) -> bool:
        """Move a build to its next stage if it is still where `move` starts
        (compare-and-set), writing `lines` to the log with it; whether it moved."""
        with self.engine.begin() as c:
            if not _move_build(c, build_id, move, error):
                return False
            app_ids = insert_log_lines(c, lines)
        self._note_logged(app_ids)
        return True

    def _note_logged(self, app_ids: set[int]) -> None:
        """The apps whose log this replica wrote to (the Store keeps them)."""

    # ------------------------------------------------------------ a deploy's release

    def next_release(self, app_id: int) -> int:
        """The version the app's next release would take (the release phase's
        commands see it as ROOST_RELEASE; a deploy beside it may take it first)."""
        with self.engine.connect() as c:
            return next_version(c, app_id)

    def release_build(self, app_id: int, res: BuildResult, move: Move) -> int | None:
        """Build `res`'s release: a new pending release, and the build's `move`
        (releasing -> rolling-out, naming the release), in one transaction.
        None, writing nothing, when the build was no longer where `move`
        starts (another controller made the release)."""
        assert res.spec is not None
        with self.engine.begin() as c:
            config = {
                r.key: r.value
                for r in c.execute(select(t.config_vars).where(t.config_vars.c.app_id == app_id))
            }
            version = next_version(c, app_id)
            if not _move_build(c, res.build_id, move, release=version):
                return None
            insert_release(
                c, app_id, version, res.build_id, res.image_digest, res.static_digest, res.spec,
                res.lock, f"build {res.build_id}", config, list(res.static_routes),
            )  # fmt: skip
            bump_desired(c)
        return version

    def end_rollout(
        self,
        app_id: int,
        version: int,
        move: Move,
        reason: str = "",
        build: BuildMove | None = None,
        lines: Sequence[LogLine] = (),
    ) -> bool:
        """End release `version`'s rollout by `move` if the release is still
        where `move` starts (compare-and-set): active (the app serves it; the
        release active until then steps aside) or failed, `reason` its
        description. `build`, the move of the deploy it is the release of, is
        written in the same transaction, and so are `lines`, its closing log
        lines. Whether it applied; when not, nothing is written (another
        controller ended it, or a newer release superseded it)."""
        values: dict[str, Any] = {}
        if reason:
            values["description"] = reason
        if move.after == ReleaseState.ACTIVE:
            values["promoted_at"] = time.time()  # the rollback window starts (aftercare)
        with self.engine.begin() as c:
            if not _move_release(c, app_id, version, move, **values):
                return False
            if move.after == ReleaseState.ACTIVE:
                aside = release_move(ReleaseState.ACTIVE, Event.SUPERSEDED)
                c.execute(
                    update(t.releases)
                    .where(
                        t.releases.c.app_id == app_id,
                        t.releases.c.version != version,
                        t.releases.c.status == aside.before,
                    )
                    .values(status=aside.after)
                )
                c.execute(
                    update(t.apps).where(t.apps.c.id == app_id).values(current_release=version)
                )
            if build is not None:
                _move_build(c, build.build_id, build.move, build.error)
            bump_desired(c)
            app_ids = insert_log_lines(c, lines)
        self._note_logged(app_ids)
        return True

    def roll_back(
        self,
        app_id: int,
        bad: int,
        move: Move,
        target: int,
        why: str,
        description: str,
        lines: Sequence[LogLine] = (),
    ) -> int | None:
        """Roll the app back from release `bad` by itself (controller/aftercare.py):
        `bad` moves by `move` (active -> rolled-back, compare-and-set; `why`
        its description) and a new pending release copies release `target`'s
        image and config, the app's config vars set to that config as
        `roost rollback` sets them, with `lines`, all in one transaction.
        The new version; None, writing nothing, when `bad` had moved on."""
        with self.engine.begin() as c:
            if not _move_release(c, app_id, bad, move, description=why):
                return None
            _roll_back_deploy(c, app_id, bad, why)
            base = c.execute(
                select(t.releases).where(
                    t.releases.c.app_id == app_id, t.releases.c.version == target
                )
            ).first()
            if base is None:
                raise NotFound(f"no release v{target}")  # rolls the move back too
            config: dict[str, str] = json.loads(base.config_json or "{}")
            c.execute(delete(t.config_vars).where(t.config_vars.c.app_id == app_id))
            if config:
                c.execute(
                    insert(t.config_vars),
                    [{"app_id": app_id, "key": k, "value": v} for k, v in sorted(config.items())],
                )
            version = next_version(c, app_id)
            insert_release(
                c, app_id, version, base.build_id or "", base.image_digest, base.static_digest,
                msgspec.json.decode(base.spec_json, type=AppSpec), base.lock, description,
                config, msgspec.json.decode(base.static_json or "[]", type=list[StaticRoute]),
            )  # fmt: skip
            bump_desired(c)
            app_ids = insert_log_lines(c, lines)
        self._note_logged(app_ids)
        return version
