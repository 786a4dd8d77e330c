"""The deploy's table wired in: the controller walks a build result through
its stages, ends a rollout and supersedes a pending release only by
deployflow's moves, each a compare-and-set in a real SQLite store. Fake
runner and servicehost callables record the stage each ran in; a retried
delivery, a second controller and a stale rollout verdict change nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy
from alembic import command

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller import rollout
from roost.controller.deployflow import Event, Move, release_move
from roost.controller.services import ServiceError
from roost.controller.store import Store
from roost.state.db import alembic_config, make_engine, migrate, sqlite_url
from roost.wire.messages import LogLine
from tests.controller import deploykit
from tests.controller.deploykit import (
    WEB,
    FakeServicehost,
    World,
    deployed,
    result,
)

# deploykit's fixtures, found by pytest among this module's names.
world = deploykit.world


async def test_a_deploy_is_written_stage_by_stage(world: World) -> None:
    sh = FakeServicehost(world.stages, "b1")
    await world.controller(servicehost=sh).build_finished(result(("postgresql",)))
    assert world.stages.seen == [("servicehost", "provisioning"), ("runner", "copying")]
    assert world.build() == ("rolling-out", "", 1)
    [rel] = world.store.releases(world.app_id)
    assert (rel.version, rel.status, rel.build_id) == (1, "pending", "b1")


async def test_no_services_passes_provisioning_by(world: World) -> None:
    sh = FakeServicehost(world.stages, "b1")
    await world.controller(servicehost=sh).build_finished(result())
    assert world.stages.seen == [("runner", "copying")]
    assert world.build() == ("rolling-out", "", 1)


async def test_the_first_formation_gives_web_two_and_a_singleton_one(world: World) -> None:
    sh = FakeServicehost(world.stages, "b1")
    await world.controller(servicehost=sh).build_finished(result())
    assert world.store.formation(world.app_id) == {"web": 2}
    clock = ProcessSpec(name="clock", kind="wsgi", entrypoint="c:app", web=True)
    spec = AppSpec(processes={"web": WEB, "clock": clock}, singletons=["clock"])
    second = msgspec.structs.replace(result(build_id="b2"), spec=spec)
    world.store.create_build("b2", world.app_id)
    await world.controller(servicehost=sh).build_finished(second)
    assert world.store.formation(world.app_id) == {"web": 2, "clock": 1}


@pytest.mark.parametrize(
    ("services", "runner_ok", "fails", "error"),
    [
        ((), False, None, "could not put a second copy"),
        (("redis",), True, ServiceError("no redis here"), "no redis here"),
        (("redis",), True, RuntimeError("disk on fire"), "provisioning failed: disk on fire"),
    ],
)
async def test_a_failing_stage_fails_the_deploy_and_makes_no_release(
    world: World,
    services: tuple[str, ...],
    runner_ok: bool,
    fails: Exception | None,
    error: str,
) -> None:
    sh = FakeServicehost(world.stages, "b1", fails)
    await world.controller(runner_ok, sh).build_finished(result(services))
    status, said, release = world.build()
    assert status == "failed" and error in said and release is None
    assert world.store.build("b1").finished_at is not None
    assert world.store.releases(world.app_id) == []


async def test_a_failed_build_fails_once(world: World) -> None:
    svc = world.controller()
    await svc.build_finished(result(ok=False))
    await svc.build_finished(result(ok=False))
    assert world.build() == ("failed", "boom", None)
    assert [e.kind for e in world.store.events(None, 10)] == ["build-failed"]


async def test_a_retried_delivery_changes_nothing(world: World) -> None:
    svc = world.controller()
    await svc.build_finished(result())
    seen = list(world.stages.seen)
    await svc.build_finished(result())
    assert world.stages.seen == seen  # nothing copied again
    assert [r.version for r in world.store.releases(world.app_id)] == [1]
    assert world.build() == ("rolling-out", "", 1)


async def test_a_second_controller_leaves_a_deploy_in_flight_alone(world: World) -> None:
    # The builder's delivery to the first controller times out while it copies
    # the image, and the builder retries at the second.
    world.gate.clear()
    first, second = world.controller(), world.controller()
    walking = asyncio.create_task(first.build_finished(result()))
    while world.stages.seen != [("runner", "copying")]:
        await asyncio.sleep(0.01)
    await second.build_finished(result())
    assert world.build() == ("copying", "", None)
    world.gate.set()
    await walking
    assert world.stages.seen == [("runner", "copying")]  # one copy, by the first
    assert [r.version for r in world.store.releases(world.app_id)] == [1]
    assert world.build() == ("rolling-out", "", 1)


async def test_two_controllers_claiming_at_once_walk_it_once(world: World) -> None:
    a, b = world.controller(), world.controller()
    await asyncio.gather(a.build_finished(result()), b.build_finished(result()))
    assert world.stages.seen == [("runner", "copying")]
    assert [r.version for r in world.store.releases(world.app_id)] == [1]


def test_a_move_from_a_stale_stage_writes_nothing(world: World) -> None:
    store = world.store
    assert store.move_build("b1", Move("building", "provisioning"))
    assert not store.move_build("b1", Move("building", "failed"), "late")
    assert world.build() == ("provisioning", "", None)


def verdicts() -> list[tuple[bool, rollout.Decision, str, str]]:
    crashed = rollout.Decision("fail", "web.1 crashed 2 times: exit 1")
    return [
        (True, rollout.Decision("promote"), "live", ""),
        (True, crashed, "rolled-back", "v1 keeps serving; v2 did not start: web.1 crashed"),
        (False, crashed, "failed", "v1 did not start: web.1 crashed"),
    ]


@pytest.mark.parametrize(("serving", "decision", "stage", "error"), verdicts())
async def test_a_rollout_ends_the_deploy(
    world: World, serving: bool, decision: rollout.Decision, stage: str, error: str
) -> None:
    svc, version = await deployed(world, serving)
    rel = world.store.release(world.app_id, version)
    await svc.c.end_rollout("shop", rel, decision)
    status, said, _ = world.build()
    assert status == stage and said.startswith(error)
    assert world.store.build("b1").finished_at is not None
    live = decision.verdict == "promote"
    assert world.store.release(world.app_id, version).status == ("active" if live else "failed")
    current = world.store.app("shop").current_release
    assert current == (version if live else (1 if serving else None))
    if serving:
        assert world.store.release(world.app_id, 1).status == ("superseded" if live else "active")
    # A second verdict on the same rollout (another controller's, or from a
    # stale read) writes nothing and says nothing.
    events = world.store.events(None, 10)
    other = world.controller()
    await other.c.end_rollout("shop", rel, rollout.Decision("fail", "late"))
    assert world.store.events(None, 10) == events
    assert world.build()[0] == stage


async def test_a_copy_release_ending_leaves_the_deploy_it_copied_alone(world: World) -> None:
    svc, version = await deployed(world, serving=False)
    await svc.c.end_rollout("shop", world.store.release(world.app_id, version), _UP)
    restart = world.store.copy_release(world.app_id, version, "restart")
    await svc.c.end_rollout("shop", world.store.release(world.app_id, restart), _CRASHED)
    assert world.store.release(world.app_id, restart).status == "failed"
    assert world.build() == ("live", "", version)


async def test_a_newer_release_supersedes_a_deploy_still_rolling_out(world: World) -> None:
    svc, version = await deployed(world, serving=True)
    rel = world.store.release(world.app_id, version)
    newer = world.store.copy_release(world.app_id, 1, "config change")
    why = f"superseded by v{newer} before it came up"
    assert world.store.release(world.app_id, version).status == "failed"
    assert world.build()[:2] == ("failed", why)
    # Its rollout's late verdict finds it superseded: nothing is written.
    await svc.c.end_rollout("shop", rel, _UP)
    assert world.store.app("shop").current_release == 1
    assert world.build()[:2] == ("failed", why)


def test_a_release_moves_only_by_the_table(world: World) -> None:
    store = world.store
    spec = AppSpec(processes={"web": WEB})
    v = store.create_release(world.app_id, "", "sha256:00", "", spec, "", "x")
    up = release_move("pending", Event.UP)
    assert store.end_rollout(world.app_id, v, up)
    assert not store.end_rollout(world.app_id, v, up)  # delivered twice
    assert not store.end_rollout(world.app_id, v, release_move("pending", Event.ROLLED_BACK))
    assert store.release(world.app_id, v).status == "active"


async def test_a_deploy_ends_with_its_last_lines_already_in_the_log(world: World) -> None:
    # The build stream ends when it reads a final stage and no new line: the
    # closing lines must be in the log by the time the stage is, or a
    # `roost deploy` that ends at the wrong moment never prints "is live".
    svc, version = await deployed(world, serving=False)
    seen: list[tuple[str, list[str]]] = []
    real = svc.c.store.end_rollout

    async def end_rollout(*args: Any, **kw: Any) -> bool:
        done = await real(*args, **kw)
        # What a stream reading right after the move's commit finds.
        logs = [r.line for r in world.store.logs(world.app_id)]
        seen.append((world.build()[0], logs))
        return done

    svc.c.store.end_rollout = end_rollout  # type: ignore[method-assign]
    await svc.c.end_rollout("shop", world.store.release(world.app_id, version), _UP)
    assert seen and seen[0][0] == "live"
    assert f"-----> v{version} is live" in seen[0][1]


def test_a_rollout_ended_twice_logs_once(world: World) -> None:
    store = world.store
    spec = AppSpec(processes={"web": WEB})
    v = store.create_release(world.app_id, "", "sha256:00", "", spec, "", "x")
    up = release_move("pending", Event.UP)
    line = LogLine(app="shop", ts=time.time(), source="build", line="-----> live")
    assert store.end_rollout(world.app_id, v, up, lines=[line])
    assert not store.end_rollout(world.app_id, v, up, lines=[line])
    assert [r.line for r in store.logs(world.app_id)].count("-----> live") == 1


def test_stored_legacy_statuses_are_rewritten(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    # The app made by this code's store (on the schema it knows), then the
    # database taken back to 0010, where builds had the old statuses.
    store = Store(make_engine(url))
    migrate(url)
    app = store.create_app("shop", store.create_account("o@example.com"))
    command.downgrade(alembic_config(url), "0010")
    with store.engine.begin() as c:
        for build_id, status in (("b1", "deploying"), ("b2", "succeeded"), ("b3", "failed")):
            c.execute(
                sqlalchemy.text(
                    "INSERT INTO builds (id, app_id, status, created_at, error) "
                    "VALUES (:id, :app, :status, 0, '')"
                ),
                {"id": build_id, "app": app.id, "status": status},
            )
    migrate(url)
    assert [store.build(b).status for b in ("b1", "b2", "b3")] == ["rolling-out", "live", "failed"]
    command.downgrade(alembic_config(url), "0010")
    assert [store.build(b).status for b in ("b1", "b2", "b3")] == [
        "deploying",
        "succeeded",
        "failed",
    ]
    store.engine.dispose()


_UP = rollout.Decision("promote")
_CRASHED = rollout.Decision("fail", "web.1 crashed 2 times: exit 1")
