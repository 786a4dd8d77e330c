"""A release is made only after a second host confirmed a copy of its image."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import Endpoint
from roost.wire.messages import BuildResult, Heartbeat, ImageCopy, Msg, Ok
from roost.wire.rpc import RpcTimeout
from tests.migrated import migrated_sqlite


class FakeClient:
    def __init__(self, ok: bool, asked: list[tuple[str, Msg]], ep: Endpoint) -> None:
        self.ok, self.asked, self.ep = ok, asked, ep

    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
        self.asked.append((self.ep.address, msg))
        if not self.ok:
            raise RpcTimeout("silent")
        return Ok()

    async def close(self) -> None:
        pass


def _setup(
    tmp_path: Path, hosts: dict[str, bool]
) -> tuple[ControllerService, Store, list[tuple[str, Msg]]]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    c = Controller(AsyncStore(store), Settings(), "t")
    for host, _ in hosts.items():
        c.soft.record(
            Heartbeat(
                host_id=host, hostname=host, rpc_endpoint=f"tcp://{host}:1", rpc_key="k" * 40
            ),
            time.monotonic(),
        )
    asked: list[tuple[str, Msg]] = []
    svc = ControllerService(
        c,
        None,
        lambda ep: FakeClient(hosts[ep.address.split("//")[1].split(":")[0]], asked, ep),  # type: ignore[arg-type,return-value]
    )
    owner = store.create_account("r@example.com")
    store.create_app("rep", owner)
    store.create_build("b1", store.app("rep").id)
    return svc, store, asked


def _result() -> BuildResult:
    from roost.appspec.model import AppSpec, ProcessSpec

    spec = AppSpec(
        processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="a:app", web=True)}
    )
    return BuildResult(build_id="b1", app="rep", ok=True, image_digest="sha256:ab", spec=spec)


@pytest.mark.parametrize(
    ("hosts", "made"),
    [({"h1": True}, True), ({"h1": False, "h2": True}, True), ({"h1": False}, False), ({}, False)],
)
async def test_release_only_after_a_second_copy(
    tmp_path: Path, hosts: dict[str, bool], made: bool, request: pytest.FixtureRequest
) -> None:
    svc, store, asked = _setup(tmp_path, hosts)
    request.addfinalizer(svc.c.store.close)
    await svc.build_finished(_result())
    build = store.build("b1")
    assert (store.releases(store.app("rep").id) != []) is made
    assert all(isinstance(m, ImageCopy) and m.digest == "sha256:ab" for _, m in asked)
    if made:
        assert build.status == "rolling-out"
        # The confirmed copy is recorded: runners find it when no builder can serve it.
        assert store.copy_hosts("sha256:ab") == [next(h for h, ok in hosts.items() if ok)]
    else:
        assert build.status == "failed" and "second copy" in build.error
