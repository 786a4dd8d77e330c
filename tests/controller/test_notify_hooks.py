"""Alerts raised where things happen: a host down and back, an instance
crash-looping, a servicehost's disk filling (the lease holder's controller,
real store; no sockets)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.controller import rollout
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.settings import Settings
from roost.state import tables as t
from roost.state.db import make_engine
from roost.wire.messages import Heartbeat, InstanceStatus, ServiceHostStatus
from tests.controller import deploykit
from tests.controller.deploykit import World, deployed, result
from tests.migrated import migrated_sqlite

# deploykit's fixtures, found by pytest among this module's names.
world = deploykit.world


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Controller, ControllerService, Store]]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    c = Controller(AsyncStore(store), Settings(host_grace_s=5.0), "test")
    c.fence, c.lease_valid_until = 1, time.monotonic() + 3600  # it holds the lease
    yield c, ControllerService(c, builders=None), store
    c.store.close()


def _alerts(store: Store) -> list[tuple[str, str, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(t.notify_events.select().order_by(t.notify_events.c.id))
        return [(r.kind, r.app, r.message) for r in rows]


async def test_a_host_down_then_back_raises_both(
    holder: tuple[Controller, ControllerService, Store],
) -> None:
    c, service, store = holder
    hb = Heartbeat(host_id="h1", hostname="box1")
    service.heartbeat(hb)
    await c.hosts_heard.record()
    assert _alerts(store) == []  # heard for the first time: not "up again"
    await c.note_down_hosts(time.monotonic() + 60)
    assert _alerts(store) == [("host-down", "", "host h1 is down")]
    service.heartbeat(hb)
    await c.hosts_heard.record()
    assert _alerts(store)[1:] == [("host-up", "", "host h1 is up again")]


async def test_a_crash_looping_instance_is_raised_once_per_instance(
    holder: tuple[Controller, ControllerService, Store],
) -> None:
    c, service, store = holder
    looping = InstanceStatus(
        instance_id="shop-web-1", app="shop", release=1, process_type="web",
        state="backoff", restarts=4, last_error="exited with 1\nKeyError: 'SECRET'",
    )  # fmt: skip
    service.heartbeat(Heartbeat(host_id="h1", hostname="box1", instances=[looping]))
    await c.reconcile_once()
    await c.reconcile_once()
    [(kind, app, message)] = _alerts(store)
    assert (kind, app) == ("instance-crash-loop", "shop")
    assert "crashed 5 times: KeyError: 'SECRET'" in message


async def test_a_servicehost_disk_nearly_full(
    holder: tuple[Controller, ControllerService, Store],
) -> None:
    _, service, store = holder
    gib = 2**30
    report = ServiceHostStatus(
        host="servicehost", disk_free_bytes=10 * gib, disk_total_bytes=100 * gib
    )
    await service.servicehost_status(report)
    await service.servicehost_status(report)  # every five seconds: raised once
    [(kind, _, message)] = _alerts(store)
    assert kind == "disk-nearly-full" and "10.0 GiB free of 100.0 GiB" in message


async def test_a_failed_build_raises_deploy_failed_once(world: World) -> None:
    svc = world.controller()
    await svc.build_finished(result(ok=False))
    await svc.build_finished(result(ok=False))  # a retried delivery of the result
    assert _alerts(world.store) == [("deploy-failed", "shop", "boom")]


@pytest.mark.parametrize(
    ("decision", "kind", "message"),
    [
        (rollout.Decision("promote"), "deploy-succeeded", "v1 is live"),
        (rollout.Decision("fail", "web.1 crashed 2 times"), "deploy-failed", "v1: web.1 crashed"),
    ],
)
async def test_a_rollout_s_end_raises_once(
    world: World,
    decision: rollout.Decision,
    kind: str,
    message: str,
) -> None:
    svc, version = await deployed(world, serving=False)
    rel = world.store.release(world.app_id, version)
    await svc.c.end_rollout("shop", rel, decision)
    await world.controller().c.end_rollout("shop", rel, decision)  # another controller, late
    [(got, app, said)] = _alerts(world.store)
    assert (got, app) == (kind, "shop") and said.startswith(message)
