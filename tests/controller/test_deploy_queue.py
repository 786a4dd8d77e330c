"""Deploys of one app in order, and cancelled: real SQLite store, real
ControllerService walks; the builder is a recorder of the BuildRequests it
is handed (the build itself is the builder's tests'), the runner a fake
that confirms image copies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command

from roost import __version__
from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller import rollout
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.deploycancel import Ended
from roost.controller.deployflow import Move, Stage
from roost.controller.service import ControllerService, stall_limits
from roost.controller.store import Store
from roost.images.manifest import reads_files_layers
from roost.settings import Settings
from roost.state import tables as t
from roost.state.db import alembic_config, make_engine, migrate
from roost.wire.cluster import Endpoint
from roost.wire.messages import BuildAccepted, BuildRequest, BuildResult, Heartbeat, Msg, Ok
from tests.migrated import migrated_sqlite

WEB = ProcessSpec(name="web", kind="wsgi", entrypoint="a:app", web=True)
PROMOTE = rollout.Decision("promote")


class Builders:
    """What a builder was handed, in order."""

    def __init__(self) -> None:
        self.handed: list[tuple[str, bytes]] = []
        self.layer_files: list[bool] = []

    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
        assert isinstance(msg, BuildRequest)
        self.handed.append((msg.build_id, msg.archive))
        self.layer_files.append(msg.layer_files)
        return BuildAccepted(build_id=msg.build_id)


class Runner:
    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
        return Ok()

    async def close(self) -> None:
        pass


@dataclass
class World:
    store: Store
    app_id: int
    builders: Builders = field(default_factory=Builders)
    services: list[ControllerService] = field(default_factory=list)

    def controller(self) -> ControllerService:
        """One more controller on the same database (with one live runner)."""
        c = Controller(AsyncStore(self.store), Settings(), f"c{len(self.services)}")
        c.soft.record(
            Heartbeat(host_id="h1", hostname="h1", rpc_endpoint="tcp://h1:1", rpc_key="k" * 40),
            time.monotonic(),
        )

        def client(ep: Endpoint) -> Runner:
            return Runner()

        svc = ControllerService(c, self.builders, client)  # type: ignore[arg-type]
        self.services.append(svc)
        return svc

    def stage(self, build_id: str) -> str:
        return self.store.build(build_id).status

    def said(self, build_id: str) -> list[str]:
        return [r.line for r in self.store.logs(self.app_id, 0, 1000, build_id)]

    def uploads(self) -> list[str]:
        with self.store.engine.connect() as c:
            return [r.build_id for r in c.execute(t.build_uploads.select())]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    app = store.create_app("shop", store.create_account("o@example.com"))
    w = World(store, app.id)
    yield w
    for svc in w.services:
        await svc.c.store.aclose()
    store.engine.dispose()


def built(build_id: str) -> BuildResult:
    spec = AppSpec(processes={"web": WEB})
    return BuildResult(build_id=build_id, app="shop", ok=True, image_digest="sha256:ab", spec=spec)


async def go_live(svc: ControllerService, world: World, build_id: str) -> int:
    """The builder's result for `build_id`, then its rollout's promotion."""
    await svc.build_finished(built(build_id))
    build = world.store.build(build_id)
    assert build.status == "rolling-out" and build.release is not None
    await svc.c.end_rollout("shop", world.store.release(world.app_id, build.release), PROMOTE)
    assert world.stage(build_id) == "live"
    return build.release


async def test_two_pushes_at_once_go_live_in_order(world: World) -> None:
    svc = world.controller()
    await asyncio.gather(
        svc.start_build("shop", world.app_id, "b1", b"one"),
        svc.start_build("shop", world.app_id, "b2", b"two"),
    )
    first, second = sorted(["b1", "b2"], key=lambda b: world.stage(b) != "building")
    assert (world.stage(first), world.stage(second)) == ("building", "queued")
    assert world.builders.handed == [(first, b"one" if first == "b1" else b"two")]
    assert f"waiting for deploy {first} to finish" in world.said(second)[0]
    assert world.uploads() == [second]
    # Its turn has not come while the first builds and rolls out.
    await svc.build_finished(built(first))
    assert await svc.start_waiting() == []
    v1 = world.store.build(first).release
    assert v1 is not None
    await svc.c.end_rollout("shop", world.store.release(world.app_id, v1), PROMOTE)
    # The first is live: the second builds, with its own upload.
    assert await svc.start_waiting() == [second]
    assert [b for b, _ in world.builders.handed] == [first, second]
    assert world.uploads() == []
    assert "the earlier deploy ended; building" in world.said(second)[1]
    assert await go_live(svc, world, second) == v1 + 1
    assert world.store.app("shop").current_release == v1 + 1


async def test_two_controllers_start_a_queued_deploy_once(world: World) -> None:
    a, b = world.controller(), world.controller()
    await a.start_build("shop", world.app_id, "b1", b"one")
    await b.start_build("shop", world.app_id, "b2", b"two")
    await a.start_build("shop", world.app_id, "b3", b"three")
    assert [world.stage(x) for x in ("b1", "b2", "b3")] == ["building", "queued", "queued"]
    assert "waiting for deploy b2 to finish" in world.said("b3")[0]
    await go_live(a, world, "b1")
    started = await asyncio.gather(a.start_waiting(), b.start_waiting())
    assert sorted(started, key=len) == [[], ["b2"]]
    assert [x for x, _ in world.builders.handed] == ["b1", "b2"]
    assert world.stage("b3") == "queued"  # behind b2 now


async def test_a_failed_deploy_lets_the_next_one_start(world: World) -> None:
    svc = world.controller()
    await svc.start_build("shop", world.app_id, "b1", b"one")
    await svc.start_build("shop", world.app_id, "b2", b"two")
    await svc.build_finished(
        BuildResult(build_id="b1", app="shop", ok=False, image_digest="", error="boom")
    )
    assert world.stage("b1") == "failed"
    assert await svc.start_waiting() == ["b2"]


async def test_a_queued_deploy_is_cancelled_at_once(world: World) -> None:
    svc = world.controller()
    await svc.start_build("shop", world.app_id, "b1", b"one")
    await svc.start_build("shop", world.app_id, "b2", b"two")
    await svc.start_build("shop", world.app_id, "b3", b"three")
    row = await svc.cancel("b2", "ann@example.com")
    assert (row.status, row.error) == ("cancelled", "cancelled by ann@example.com")
    assert "-----> cancelled by ann@example.com" in world.said("b2")
    assert world.uploads() == ["b3"]
    await go_live(svc, world, "b1")
    assert await svc.start_waiting() == ["b3"]  # the cancelled one is skipped
    with pytest.raises(Ended, match=r"cancelled by ann@example\.com"):
        await svc.cancel("b2", "bob@example.com")


async def test_a_building_deploy_cancelled_discards_its_build_and_starts_the_next(
    world: World,
) -> None:
    svc = world.controller()
    await svc.start_build("shop", world.app_id, "b1", b"one")
    await svc.start_build("shop", world.app_id, "b2", b"two")
    await svc.cancel("b1", "ann@example.com")
    # The next one starts with the cancel, not at the next pump.
    assert world.stage("b2") == "building"
    assert [x for x, _ in world.builders.handed] == ["b1", "b2"]
    # The builder's late result for b1 is discarded: no release is made of it.
    await svc.build_finished(built("b1"))
    assert world.stage("b1") == "cancelled"
    assert world.store.releases(world.app_id) == []


async def test_a_rolling_out_deploy_cancelled_fails_its_release_and_the_old_one_serves(
    world: World,
) -> None:
    svc = world.controller()
    await svc.start_build("shop", world.app_id, "b1", b"one")
    v1 = await go_live(svc, world, "b1")
    await svc.start_build("shop", world.app_id, "b2", b"two")
    await svc.build_finished(built("b2"))
    v2 = world.store.build("b2").release
    assert v2 is not None and world.stage("b2") == "rolling-out"
    pending = world.store.release(world.app_id, v2)  # as the reconcile read it
    await svc.cancel("b2", "ann@example.com")
    assert world.stage("b2") == "cancelled"
    assert world.store.release(world.app_id, v2).status == "failed"
    assert world.store.app("shop").current_release == v1
    assert f"-----> v{v1} keeps serving" in world.said("b2")
    # The rollout's late verdict writes nothing.
    await svc.c.end_rollout("shop", pending, PROMOTE)
    assert world.store.app("shop").current_release == v1
    assert world.stage("b2") == "cancelled"
    events = [e.kind for e in world.store.events(None, 10)]
    assert "deploy-cancelled" in events


async def test_a_deploy_that_went_live_is_not_cancelled(world: World) -> None:
    svc = world.controller()
    await svc.start_build("shop", world.app_id, "b1", b"one")
    await go_live(svc, world, "b1")
    with pytest.raises(Ended, match=r"v1 is live"):
        await svc.cancel("b1", "ann@example.com")
    assert world.stage("b1") == "live"


async def test_a_deploy_queues_behind_one_stamped_by_a_clock_running_ahead(world: World) -> None:
    # Another controller, its clock a minute ahead, let b1 in first: b2 is
    # behind it, though its own clock says it came earlier.
    world.store.create_build("b1", world.app_id)
    with world.store.engine.begin() as c:
        c.execute(t.builds.update().values(created_at=time.time() + 60))
    assert world.store.enqueue_build("b2", world.app_id, b"two") == "b1"
    assert world.store.enqueue_build("b3", world.app_id, b"three") == "b2"
    assert world.store.claim_queued(world.app_id) is None
    svc = world.controller()
    await go_live(svc, world, "b1")
    assert world.store.claim_queued(world.app_id) == ("b2", b"two")


async def test_a_deploy_stuck_mid_stage_is_failed_when_one_waits_behind_it(world: World) -> None:
    # b1's controller stopped while it copied the image: nothing resumes it.
    svc = world.controller()
    await svc.start_build("shop", world.app_id, "b1", b"one")
    assert world.store.move_build("b1", Move("building", "copying"))
    await svc.start_build("shop", world.app_id, "b2", b"two")
    assert await svc.start_waiting() == []  # copying for a moment: b2 waits
    limit = stall_limits(svc.c.settings)[Stage.COPYING]
    with world.store.engine.begin() as c:
        c.execute(
            t.builds.update().where(t.builds.c.id == "b1").values(moved_at=time.time() - limit - 1)
        )
    assert await svc.start_waiting() == ["b2"]
    b1 = world.store.build("b1")
    why = f"no progress while copying the image to a second host for {limit:.0f}s"
    assert b1.status == "failed" and b1.error.startswith(why), b1.error
    assert f"-----> failed: {b1.error}" in world.said("b1")


def test_a_downgrade_ends_queued_and_cancelled_deploys_as_failed(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path / "old.db")
    store = Store(make_engine(url))
    app = store.create_app("shop", store.create_account("o@example.com"))
    store.create_build("b1", app.id)
    store.enqueue_build("b2", app.id, b"two")
    store.enqueue_build("b3", app.id, b"three")
    assert store.move_build("b3", Move("queued", "cancelled"), "cancelled by ann@example.com")
    command.downgrade(alembic_config(url), "0013")
    with store.engine.connect() as c:
        rows = c.execute(sqlalchemy.text("SELECT id, status, error FROM builds ORDER BY id"))
        assert [tuple(r) for r in rows] == [
            ("b1", "building", ""),
            ("b2", "failed", "cancelled by a downgrade"),
            ("b3", "failed", "cancelled by ann@example.com"),
        ]
    migrate(url)  # and up again
    assert store.enqueue_build("b4", app.id, b"four") == "b1"
    store.engine.dispose()


async def test_layers_are_named_by_their_files_only_once_every_runner_reads_them(
    world: World,
) -> None:
    """A rolling upgrade replaces builders before runners: a runner of an older release
    refuses an image whose layer is named by its files, so the builder is asked for one
    only when every runner heard of (down ones too) runs a release that reads it."""
    svc = world.controller()  # its runner h1 says no release: 0.1.0

    def beat(host: str, release: str) -> None:
        hb = Heartbeat(host_id=host, hostname=host, rpc_endpoint=f"tcp://{host}:1",
                       rpc_key="k" * 40, release=release)  # fmt: skip
        svc.c.soft.record(hb, time.monotonic())

    await svc.start_build("shop", world.app_id, "b1", b"one")
    beat("h1", __version__)
    await go_live(svc, world, "b1")
    await svc.start_build("shop", world.app_id, "b2", b"two")
    beat("h2", "0.2.0")
    await go_live(svc, world, "b2")
    await svc.start_build("shop", world.app_id, "b3", b"three")
    assert world.builders.layer_files == [False, True, False]
    assert [reads_files_layers(r) for r in ("", "0.1.0", "0.2.0", "0.3.0.dev0", "1.0.0")] == [
        False, False, False, True, True,
    ]  # fmt: skip
