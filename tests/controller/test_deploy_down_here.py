"""A deploy that finds no builder says which roles `roost up` on the
controller's machine reports down, and why: `git push` shows the deploy's
own failure and has no other way to learn it (issue 14, a new user's first
run). Real SQLite store and ControllerService; the builders' client is one
that gets no answer, as when the builder crash-loops."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.platformsnap import PlatformFiles
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.proc import upstate
from roost.proc.upstate import RoleStatus, UpStatus
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.messages import Msg
from roost.wire.rpc import RpcTimeout
from tests.migrated import migrated_sqlite

CRASHED = "exited with status 70\nTraceback (most recent call last):\nOSError: [Errno 28] No space"


class Silent:
    """Builders that never answer."""

    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
        raise RpcTimeout("no reply after 2 tries: tcp://127.0.0.1:7110 did not answer within 30.0s")


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Store, ControllerService, int]]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    app = store.create_app("shop", store.create_account("o@example.com"))
    c = Controller(AsyncStore(store), Settings(), "c1")
    svc = ControllerService(c, Silent(), platform=PlatformFiles(tmp_path, url))  # type: ignore[arg-type]
    yield store, svc, app.id
    await c.store.aclose()
    store.engine.dispose()


def up_json(data: Path, pid: int) -> None:
    upstate.save(
        data,
        UpStatus(
            pid=pid,
            roles={
                "controller": RoleStatus(state="up", pid=10),
                "builder": RoleStatus(state="backoff", restarts=4, last_error=CRASHED),
            },
        ),
    )


async def test_the_failure_names_the_role_down_and_why(
    setup: tuple[Store, ControllerService, int], tmp_path: Path
) -> None:
    store, svc, app_id = setup
    up_json(tmp_path, os.getpid())  # a live `roost up` on this data directory
    await svc.start_build("shop", app_id, "b1", b"archive")
    build = store.build("b1")
    assert build.status == "failed"
    said = f"{upstate.DOWN_HERE}: builder is backoff (restarted 4 times): exited with status 70: "
    assert said + "OSError: [Errno 28] No space" in build.error
    lines = [r.line for r in store.logs(app_id, 0, 100, "b1")]
    assert any(said in line for line in lines), lines  # what git push shows
    assert "controller" not in build.error.split(upstate.DOWN_HERE)[1]  # only what is down


async def test_nothing_is_added_without_a_live_roost_up(
    setup: tuple[Store, ControllerService, int], tmp_path: Path
) -> None:
    store, svc, app_id = setup
    up_json(tmp_path, 2**22 + 1)  # left by a roost up that is gone (no such pid)
    await svc.start_build("shop", app_id, "b1", b"archive")
    build = store.build("b1")
    assert build.status == "failed"
    assert build.error.startswith("no builder accepted the build: no reply after 2 tries")
    assert upstate.DOWN_HERE not in build.error
