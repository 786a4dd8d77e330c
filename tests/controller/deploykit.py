"""A controller walking deploys over a SQLite state database, with fake
builders, servicehosts and runners recording what it sent, for the deploy tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import AppRow, Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import Endpoint
from roost.wire.messages import BuildResult, Heartbeat, Msg, Ok
from roost.wire.rpc import RpcTimeout
from tests.migrated import migrated_sqlite
from tests.releases import go_live

WEB = ProcessSpec(name="web", kind="wsgi", entrypoint="a:app", web=True)


@dataclass
class Stages:
    """What the fakes saw: (who, the build's stage when it was called)."""

    store: Store
    seen: list[tuple[str, str]] = field(default_factory=list)

    def note(self, who: str, build_id: str) -> None:
        self.seen.append((who, self.store.build(build_id).status))


class FakeServicehost:
    """ServiceBroker.ensure as the deploy calls it."""

    def __init__(self, stages: Stages, build_id: str, fails: Exception | None = None) -> None:
        self.stages, self.build_id, self.fails = stages, build_id, fails

    async def ensure(self, app: AppRow, spec: AppSpec) -> list[str]:
        self.stages.note("servicehost", self.build_id)
        if self.fails is not None:
            raise self.fails
        return list(spec.services)


class FakeRunner:
    """A runner's RPC client: ImageCopy answered (or silent), after `gate`."""

    def __init__(self, stages: Stages, build_id: str, ok: bool, gate: asyncio.Event) -> None:
        self.stages, self.build_id, self.ok, self.gate = stages, build_id, ok, gate

    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
        self.stages.note("runner", self.build_id)
        await self.gate.wait()
        if not self.ok:
            raise RpcTimeout("silent")
        return Ok()

    async def close(self) -> None:
        pass


@dataclass
class World:
    store: Store
    stages: Stages
    app_id: int
    gate: asyncio.Event
    services: list[ControllerService] = field(default_factory=list)

    def controller(
        self, runner_ok: bool = True, servicehost: FakeServicehost | None = None
    ) -> ControllerService:
        """One more controller on the same database, one live runner in its view."""
        c = Controller(AsyncStore(self.store), Settings(), f"c{len(self.services)}")
        c.soft.record(
            Heartbeat(host_id="h1", hostname="h1", rpc_endpoint="tcp://h1:1", rpc_key="k" * 40),
            time.monotonic(),
        )
        c.services = servicehost  # type: ignore[assignment]
        client: Callable[[Endpoint], FakeRunner] = lambda ep: FakeRunner(  # noqa: E731
            self.stages, "b1", runner_ok, self.gate
        )
        svc = ControllerService(c, None, client)  # type: ignore[arg-type]
        self.services.append(svc)
        return svc

    def build(self) -> tuple[str, str, int | None]:
        b = self.store.build("b1")
        return b.status, b.error, b.release


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    app = store.create_app("shop", store.create_account("o@example.com"))
    store.create_build("b1", app.id)
    gate = asyncio.Event()
    gate.set()
    w = World(store, Stages(store), app.id, gate)
    yield w
    for svc in w.services:
        await svc.c.store.aclose()
    store.engine.dispose()


def result(services: tuple[str, ...] = (), ok: bool = True, build_id: str = "b1") -> BuildResult:
    spec = AppSpec(processes={"web": WEB}, services=list(services))
    return BuildResult(
        build_id=build_id, app="shop", ok=ok, image_digest="sha256:ab", spec=spec, error="boom"
    )


async def deployed(world: World, serving: bool) -> tuple[ControllerService, int]:
    """b1 rolling out as v2 (over a live v1 when `serving`) or as v1."""
    if serving:
        spec = AppSpec(processes={"web": WEB})
        v1 = world.store.create_release(world.app_id, "b0", "sha256:00", "", spec, "", "old")
        go_live(world.store, world.app_id, v1)
    svc = world.controller()
    await svc.build_finished(result())
    status, _, version = world.build()
    assert status == "rolling-out" and version is not None
    return svc, version
