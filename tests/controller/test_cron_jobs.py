"""The cron runner's job list follows desired state, and is read only when it moved."""

from __future__ import annotations

import asyncio

import pytest

from roost.appspec.model import AppSpec, CronJob, ProcessSpec
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.cronrunner import CronRunner
from roost.controller.store import Store
from roost.settings import Settings
from tests.releases import go_live

WEB = ProcessSpec(name="web", kind="wsgi", entrypoint="a:app", web=True)


def spec(*commands: str) -> AppSpec:
    return AppSpec(
        processes={"web": WEB},
        cron=[CronJob(command=c, schedule="* * * * *") for c in commands],
    )


async def test_jobs_follow_releases_and_suspension(store: Store) -> None:
    app = store.create_app("shop", store.create_account("o@example.com"))
    astore = AsyncStore(store)
    try:
        cron = CronRunner(Controller(astore, Settings(), "c1"), lambda ep: None)  # type: ignore[arg-type,return-value]
        assert await cron.jobs() == {}
        v1 = store.create_release(app.id, "", "sha256:00", "", spec("echo one"), "", "v1")
        go_live(store, app.id, v1)
        assert [j.command for j in (await cron.jobs()).values()] == ["echo one"]

        reads = 0
        real = astore.apps

        async def counted(*args: object) -> object:
            nonlocal reads
            reads += 1
            return await real(*args)  # type: ignore[arg-type]

        astore.apps = counted  # type: ignore[method-assign,assignment]
        await cron.jobs()
        assert reads == 0  # nothing changed: not read again

        v2 = store.create_release(app.id, "", "sha256:00", "", spec("echo two"), "", "v2")
        go_live(store, app.id, v2)
        assert [j.command for j in (await cron.jobs()).values()] == ["echo two"]
        store.set_suspended(app.id, True)
        assert await cron.jobs() == {}
        store.set_suspended(app.id, False)
        assert len(await cron.jobs()) == 1
        store.delete_app("shop")
        assert await cron.jobs() == {}
        assert reads == 4
    finally:
        await astore.aclose()


async def test_a_job_new_in_a_release_just_live_is_not_due_before_it(store: Store) -> None:
    app = store.create_app("shop", store.create_account("o@example.com"))
    astore = AsyncStore(store)
    try:
        cron = CronRunner(Controller(astore, Settings(), "c1"), lambda ep: None)  # type: ignore[arg-type,return-value]
        v1 = store.create_release(app.id, "", "sha256:00", "", spec("echo one"), "", "v1")
        go_live(store, app.id, v1)
        v2 = store.create_release(
            app.id, "", "sha256:00", "", spec("echo one", "echo two"), "", "v2"
        )
        go_live(store, app.id, v2)
        promoted = store.release(app.id, v2).promoted_at
        assert promoted is not None
        got = {j.command: j.not_before for j in (await cron.jobs()).values()}
        assert got == {"echo one": 0.0, "echo two": promoted}
    finally:
        await astore.aclose()


async def test_a_lapse_of_is_leader_keeps_the_catch_up_point(store: Store) -> None:
    # A holder whose renewal was only slow sees is_leader lapse, then come
    # back under the same token: the next tick must look back from where the
    # last one stopped, not a whole catch-up window again (which ran a job
    # added in between for slots from before it existed).
    astore = AsyncStore(store)
    try:
        c = Controller(astore, Settings(cron_slot_s=0.06), "c1")
        cron = CronRunner(c, lambda ep: None)  # type: ignore[arg-type,return-value]
        cron.since, cron.fence_seen = 1000.0, 7
        leading = iter([False, False, True])
        seen: list[float | None] = []

        def is_leader(_: object) -> bool:
            return next(leading)

        async def tick(_tg: object) -> None:
            seen.append(cron.since)
            raise asyncio.CancelledError

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Controller, "is_leader", property(is_leader))
            mp.setattr(cron, "tick", tick)
            with pytest.raises(asyncio.CancelledError):
                await cron.loop()
        assert seen == [1000.0]
    finally:
        await astore.aclose()
