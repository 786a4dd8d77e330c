"""A lease holder over a SQLite state database with one live app, for the
reconcile tests: the store, a leader and its heartbeats."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.state.leases import Lease
from roost.wire.messages import Heartbeat, InstanceStatus, Msg
from tests.migrated import migrated_sqlite
from tests.releases import go_live

SPEC = AppSpec(
    processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
)


class Published:
    def __init__(self) -> None:
        self.msgs: list[Msg] = []

    async def publish(self, topic: str, msg: Msg) -> None:
        assert topic == "routes"
        self.msgs.append(msg)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = migrated_sqlite(tmp_path / "state.db")
    s = Store(make_engine(url))
    owner = s.create_account("o@example.com")
    app = s.create_app("shop", owner)
    v = s.create_release(app.id, "b1", "sha256:img", "", SPEC, "", "first", config={"K": "v"})
    go_live(s, app.id, v)
    s.set_formation(app.id, {"web": 2})
    yield s
    s.engine.dispose()


@pytest.fixture
def astore(store: Store) -> Iterator[AsyncStore]:
    a = AsyncStore(store)
    yield a
    a.close()


def leader(astore: AsyncStore, token: int = 1) -> tuple[Controller, Published]:
    c = Controller(astore, Settings(host_grace_s=5.0), "test")
    c._lease_result(Lease("scheduler", c.holder_id, token, 0.0), time.monotonic(), 60.0)
    c.leader_since = time.monotonic() - 100  # settled
    pub = Published()
    c.publisher = pub  # type: ignore[assignment]
    return c, pub


def beat(c: Controller, host: str, now: float, up: bool = True) -> None:
    """The host reports every instance assigned to it (up, with a port)."""
    asg = c.assignments.get(host)
    instances = [
        InstanceStatus(
            instance_id=i.instance_id, app=i.app, release=i.release, process_type="web",
            state="up" if up else "starting", port=6000,
        )
        for i in (asg.content if asg else ())
    ]  # fmt: skip
    c.soft.record(
        Heartbeat(host_id=host, hostname=host, addresses=[f"10.0.0.{host[-1]}"],
                  instances=instances),
        now,
    )  # fmt: skip
