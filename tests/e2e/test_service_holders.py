"""Two servicehosts hold different apps' data: the controller sends each
request to the one holding it (issue 16).

Two real servicehost daemons (PostgreSQL, Redis), each with its own host id,
and the controller's API in-process over a real state database. Before
holders were recorded, requests rotated between servicehosts: a removal sent
to the one without the database answered "removed, no backup", and the
binding was dropped while the data stayed, unbacked-up, on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.servicehosts import ServiceHosts
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import Endpoint
from roost.wire.node import Node
from roost.wire.rpc import RpcClient
from tests.migrated import migrated_sqlite
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pair() -> Iterator[dict[str, Servicehost]]:
    hosts = {name: Servicehost(host=name) for name in ("svc-a", "svc-b")}
    try:
        for sh in hosts.values():
            sh.start()

        async def up() -> None:
            await asyncio.gather(*(sh.wait_postgres_up() for sh in hosts.values()))

        asyncio.run(up())
        yield hosts
    except BaseException:
        for sh in hosts.values():
            print(sh.tail())
        raise
    finally:
        for sh in hosts.values():
            sh.cleanup()


@dataclass
class World:
    api: httpx.AsyncClient
    store: Store
    broker: ServiceBroker
    hosts: dict[str, Servicehost]
    # A second controller on the same state database (its own caches), as
    # a cluster's other controller behind the same name.
    other: httpx.AsyncClient


async def held_by(sh: Servicehost, app: str, kind: str) -> bool:
    st = await sh.status()
    return any(s.app == app and s.kind == kind for s in st.servers)


async def holder(api: httpx.AsyncClient, app: str, kind: str) -> str:
    r = await api.get(f"/api/apps/{app}/services/{kind}")
    assert r.status_code == 200, r.text
    return str(r.json()["holder"])


@pytest.fixture
async def world(tmp_path: Path, pair: dict[str, Servicehost]) -> AsyncIterator[World]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    controller = Controller(AsyncStore(store), Settings(), "test")
    # Each servicehost admits the controller key of its own keys directory.
    keys = {sh.endpoint.address: sh.client_keys for sh in pair.values()}
    endpoints = [sh.endpoint for sh in pair.values()]
    async with Node(pair["svc-a"].client_keys, []) as node:

        def client_for(ep: Endpoint) -> RpcClient:
            return RpcClient(node, [ep], keypair=keys[ep.address])

        every = RpcClient(node, endpoints)
        hosts = ServiceHosts(endpoints, client_for)
        broker = ServiceBroker(controller.store, SecretBox(b"k" * 32), every, hosts)
        controller.services = broker
        second = Controller(AsyncStore(Store(make_engine(url))), Settings(), "test-2")
        second.services = ServiceBroker(second.store, SecretBox(b"k" * 32), every, hosts)
        account = store.create_account("owner@example.com")
        headers = {"Authorization": f"Bearer {store.issue_token(account)}"}

        def api_of(c: Controller) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(
                    app=create_api(c, ControllerService(c, builders=None))
                ),
                base_url="http://controller",
                headers=headers,
                timeout=120,
            )

        try:
            async with api_of(controller) as api, api_of(second) as other:
                yield World(api, store, broker, pair, other)
        finally:
            await hosts.close()
            await every.close()
            await controller.store.aclose()
            await second.store.aclose()


async def test_each_apps_services_are_placed_and_removed_on_their_holder(world: World) -> None:
    api, sh = world.api, world.hosts
    for app in ("hold-1", "hold-2"):
        assert (await api.post("/api/apps", json={"name": app})).status_code == 201
        r = await api.post(f"/api/apps/{app}/services", json={"kind": "postgres"})
        assert r.status_code == 201, r.text
    first, second = await holder(api, "hold-1", "postgres"), await holder(api, "hold-2", "postgres")
    # The second app goes where the first is not: the one with more room.
    assert {first, second} == {"svc-a", "svc-b"}
    assert await held_by(sh[first], "hold-1", "postgres")
    assert not await held_by(sh[second], "hold-1", "postgres")
    # An app's Redis joins its PostgreSQL.
    r = await api.post("/api/apps/hold-1/services", json={"kind": "redis"})
    assert r.status_code == 201, r.text
    assert await holder(api, "hold-1", "redis") == first
    listed = (await api.get("/api/apps/hold-1/services")).json()
    assert {(s["kind"], s["holder"]) for s in listed} == {("postgres", first), ("redis", first)}

    # Removed in the order that sent the request to the wrong servicehost
    # before: each reaches its holder, which takes the final backup and drops it.
    r = await api.delete("/api/apps/hold-2/services/postgres")
    assert r.status_code == 200, r.text
    backup = Path(r.json()["backup"])
    assert backup.is_relative_to(sh[second].data) and backup.stat().st_size > 0
    assert not await held_by(sh[second], "hold-2", "postgres")
    assert await held_by(sh[first], "hold-1", "postgres")  # the other app's is untouched

    # A binding recorded before holders were: found by asking, then recorded.
    hold1 = world.store.app("hold-1")
    world.store.set_service_host(hold1.id, "postgres", "")
    world.broker.forget([hold1.id])
    r = await api.delete("/api/apps/hold-1/services/postgres")
    assert r.status_code == 200, r.text
    assert Path(r.json()["backup"]).is_relative_to(sh[first].data)
    assert not await held_by(sh[first], "hold-1", "postgres")
    rows = world.store.service_bindings(hold1.id)
    assert [(row.kind, row.host) for row in rows] == [("redis", first)]
    # Recorded under an id no servicehost answers as any more (restored
    # onto another machine): the one that reports it is recorded instead.
    world.store.set_service_host(hold1.id, "redis", "svc-gone")
    world.broker.forget([hold1.id])
    assert await holder(api, "hold-1", "redis") == first
    assert [row.host for row in world.store.service_bindings(hold1.id)] == [first]


async def test_a_holder_down_is_an_error_naming_it_and_nothing_is_unbound(world: World) -> None:
    api = world.api
    assert (await api.post("/api/apps", json={"name": "down-1"})).status_code == 201
    r = await api.post("/api/apps/down-1/services", json={"kind": "redis"})
    assert r.status_code == 201, r.text
    host = await holder(api, "down-1", "redis")
    world.hosts[host].stop()
    r = await api.delete("/api/apps/down-1/services/redis")
    assert r.status_code == 503 and f"servicehost {host} does not answer" in r.text, r.text
    app = world.store.app("down-1")
    assert [(b.kind, b.host) for b in world.store.service_bindings(app.id)] == [("redis", host)]
    # Its details still show, and where the data is.
    assert await holder(api, "down-1", "redis") == host


async def test_a_service_bound_through_one_controller_is_seen_by_the_other(world: World) -> None:
    """The other controller asked about the app before the binding (its
    cache: no services); the app has no release, so no desired-state change
    tells it. Listing, details and removal through it still find the
    service (they read the bindings afresh); before, "has no redis service"."""
    api, other = world.api, world.other
    assert (await api.post("/api/apps", json={"name": "both"})).status_code == 201
    assert (await other.get("/api/apps/both/services")).json() == []
    r = await api.post("/api/apps/both/services", json={"kind": "redis"})
    assert r.status_code == 201, r.text
    listed = (await other.get("/api/apps/both/services")).json()
    assert [s["kind"] for s in listed] == ["redis"], listed
    assert await holder(other, "both", "redis") == await holder(api, "both", "redis")
    r = await other.post("/api/apps/both/services", json={"kind": "redis"})
    assert r.status_code == 409, r.text  # not provisioned twice
    r = await other.delete("/api/apps/both/services/redis")
    assert r.status_code == 200, r.text
    assert (await api.get("/api/apps/both/services")).json() == []
