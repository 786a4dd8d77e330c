"""The release phase (predeploy, then the release command) and postdeploy,
through a real runner: CURVE sockets, the runner's RPC handlers, its image
cache filled from the builder's store, and exec sessions running real
processes (unconfined: the sandbox is the runner's own tests' matter).
The pure parts of roost.controller.releasephase are tested first."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from roost.appspec.model import AppSpec
from roost.controller import rollout
from roost.controller.deployflow import cancel_move
from roost.controller.releasephase import (
    INDENT,
    Ended,
    Step,
    failure,
    how_it_ended,
    release_steps,
)
from roost.controller.store import NotFound
from roost.sessions.server import ExecSessions
from tests.images.helpers import put_layered
from tests.runner.copieskit import SPEC, VENV, World, finished_build, hold_lease, world
from tests.sessions import kit as sessions_kit


def test_predeploy_runs_before_the_release_command() -> None:
    assert release_steps(AppSpec()) == []
    spec = AppSpec(release_command="python manage.py migrate", predeploy_command="./check")
    assert release_steps(spec) == [
        Step("predeploy", "./check"),
        Step("release command", "python manage.py migrate"),
    ]
    # postdeploy is not part of the release phase: it runs once the release serves.
    assert release_steps(AppSpec(postdeploy_command="./notify")) == []


def test_a_failure_says_how_the_command_ended_and_its_last_lines() -> None:
    step = Step("release command", "migrate")
    assert Ended(status=0).ok
    assert (
        how_it_ended(step, Ended(status=0), 60) == "release command 'migrate' exited with status 0"
    )
    tail = ("Applying 0002...", "relation exists")
    assert failure(step, Ended(status=1, tail=tail), 60) == (
        "release command 'migrate' exited with status 1; its last lines:\n"
        "Applying 0002...\nrelation exists"
    )
    timed_out = Ended(timed_out=True)
    assert not timed_out.ok
    assert failure(step, timed_out, 90) == (
        "release command 'migrate' was stopped: still running after 90s"
    )
    assert "killed by signal KILL" in failure(step, Ended(signal="KILL"), 60)
    lost = Ended(lost="the runner lost it: no session x")
    assert not lost.ok and "did not run to its end: the runner lost it" in failure(step, lost, 60)


# ---------------------------------------------------------------- with a runner


# Exec sessions that run (the runner's own, as its daemon starts them).
sessions = sessions_kit.sessions


async def _until(pred: Callable[[], object], what: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.1)):
        with contextlib.suppress(NotFound):  # e.g. the app is not made yet
            if pred():
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _deploy(w: World, sessions: ExecSessions, spec: AppSpec, build_id: str) -> int:
    """Build `build_id` of app "rep" with `spec` (an image holding seed.txt),
    hand the result to the controller; the app's id."""
    image, _, _ = put_layered(
        w.builder_store,
        {"app/seed.txt": b"from the image\n", "roost-image.json": b"{}"},
        VENV,
    )
    if "a" not in w.servers:
        w.runner("a", sessions=sessions)
    res = msgspec.structs.replace(finished_build(w, image, build_id), spec=spec)
    app_id = w.store.app("rep").id
    w.store.update_config(app_id, {"GREETING": "hello"})
    await w.service.build_finished(res)
    return app_id


def _lines(w: World, app_id: int, build_id: str) -> list[str]:
    return [r.line for r in w.store.logs(app_id, 0, 500, build_id)]


async def test_predeploy_and_release_run_in_the_new_image_before_the_release(
    tmp_path: Path, sessions: ExecSessions
) -> None:
    spec = msgspec.structs.replace(
        SPEC,
        predeploy_command='echo "pre $GREETING v$ROOST_RELEASE"; cat seed.txt',
        release_command="echo released",
    )
    async with world(tmp_path, ("a",)) as w:
        app_id = await _deploy(w, sessions, spec, "b1")
        build = w.store.build("b1")
        assert (build.status, build.error, build.release) == ("rolling-out", "", 1)
        lines = _lines(w, app_id, "b1")
        ran = [ln for ln in lines if ln.startswith(INDENT) or "predeploy" in ln or "release" in ln]
        # In order, each command's output under its own line; the config var
        # and the coming release's number in its environment, the image's
        # checkout its working directory.
        assert ran[ran.index(f"-----> running predeploy: {spec.predeploy_command}") :][:6] == [
            f"-----> running predeploy: {spec.predeploy_command}",
            INDENT + "pre hello v1",
            INDENT + "from the image",
            f"-----> predeploy {spec.predeploy_command!r} exited with status 0",
            "-----> running release command: echo released",
            INDENT + "released",
        ]
        assert "-----> release command 'echo released' exited with status 0" in lines
        assert [r.version for r in w.store.releases(app_id)] == [1]
        await _until(lambda: not sessions.sessions, "the runner to forget the sessions")


async def test_a_failing_release_command_fails_the_deploy_and_releases_nothing(
    tmp_path: Path, sessions: ExecSessions
) -> None:
    spec = msgspec.structs.replace(
        SPEC, predeploy_command="true", release_command="echo one; echo two >&2; exit 3"
    )
    async with world(tmp_path, ("a",)) as w:
        app_id = await _deploy(w, sessions, spec, "b1")
        build = w.store.build("b1")
        assert build.status == "failed" and build.release is None
        assert build.error.startswith(
            "release command 'echo one; echo two >&2; exit 3' exited with status 3; "
            "its last lines:\n"
        )
        assert sorted(build.error.splitlines()[1:]) == ["one", "two"]
        assert w.store.releases(app_id) == []
        assert any(e.kind == "deploy-failed" for e in w.store.events({app_id}))
        assert _lines(w, app_id, "b1")[-1].startswith("-----> release command")


async def test_a_release_command_out_of_time_is_stopped_and_fails_the_deploy(
    tmp_path: Path, sessions: ExecSessions
) -> None:
    spec = msgspec.structs.replace(SPEC, release_command="echo started; exec sleep 120")
    async with world(tmp_path, ("a",)) as w:
        w.controller.settings = dataclasses.replace(w.controller.settings, release_timeout_s=1.0)
        app_id = await _deploy(w, sessions, spec, "b1")
        build = w.store.build("b1")
        assert build.status == "failed" and w.store.releases(app_id) == []
        assert build.error == (
            "release command 'echo started; exec sleep 120' was stopped: still running "
            "after 1s; its last lines:\nstarted"
        )
        # The runner was told to stop it: nothing of it is left running.
        await _until(lambda: not sessions.sessions, "the runner to stop the command")


async def test_postdeploy_runs_once_the_release_is_live_and_a_failure_undoes_nothing(
    tmp_path: Path, sessions: ExecSessions
) -> None:
    spec = msgspec.structs.replace(SPEC, postdeploy_command='echo "notified v$ROOST_RELEASE"')
    async with world(tmp_path, ("a",)) as w:
        hold_lease(w.controller)
        phase = w.service.release_phase
        app_id = await _deploy(w, sessions, spec, "b1")
        assert w.store.build("b1").status == "rolling-out"
        assert "running postdeploy" not in "\n".join(_lines(w, app_id, "b1"))
        rel = w.store.release(app_id, 1)
        loop = asyncio.create_task(phase.loop())
        try:
            # The lease holder ends the rollout: live, and the postdeploy follows.
            await w.controller.end_rollout("rep", rel, rollout.Decision("promote"))
            assert w.store.build("b1").status == "live"
            await _until(
                lambda: (
                    "-----> postdeploy 'echo \"notified v$ROOST_RELEASE\"' exited with "
                    "status 0" in _lines(w, app_id, "b1")
                ),
                "the postdeploy",
            )
            assert INDENT + "notified v1" in _lines(w, app_id, "b1")
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop

        # A release made without a build (a config change) runs no postdeploy.
        v2 = w.store.copy_release(app_id, 1, "config change")
        await w.controller.end_rollout(
            "rep", w.store.release(app_id, v2), rollout.Decision("promote")
        )
        assert phase._live.empty()

        # A failing postdeploy is said and made an event; the release stays live.
        failing = dataclasses.replace(
            rel, spec=msgspec.structs.replace(spec, postdeploy_command="echo failing; exit 5")
        )
        assert not await phase.postdeploy("rep", failing)
        assert _lines(w, app_id, "b1")[-1] == (
            "-----> postdeploy 'echo failing; exit 5' exited with status 5; v1 stays live"
        )
        events = [e for e in w.store.events({app_id}) if e.kind == "postdeploy-failed"]
        assert [e.message for e in events] == [
            "rep v1: postdeploy 'echo failing; exit 5' exited with status 5"
        ]
        assert w.store.app_by_id(app_id).current_release == v2


async def test_a_deploy_cancelled_in_its_release_phase_stops_the_command(
    tmp_path: Path, sessions: ExecSessions
) -> None:
    spec = msgspec.structs.replace(SPEC, release_command="echo started; exec sleep 120")
    async with world(tmp_path, ("a",)) as w:
        deploy = asyncio.create_task(_deploy(w, sessions, spec, "b1"))
        await _until(
            lambda: "started" in "\n".join(_lines(w, w.store.app("rep").id, "b1")),
            "the release command to start",
        )
        # `roost deploys cancel` as deploycancel writes it: the stage moves under the driver.
        assert w.store.move_build("b1", cancel_move("release-phase"), "cancelled by ann")
        app_id = await asyncio.wait_for(deploy, 30)
        build = w.store.build("b1")
        assert (build.status, build.error) == ("cancelled", "cancelled by ann")
        assert w.store.releases(app_id) == []
        await _until(lambda: not sessions.sessions, "the runner to stop the command")
