"""An app's own data quota through the API (issue 17): `PUT/DELETE/GET
/api/apps/APP/data/quota`. Bad sizes and sizes below what the app stores
are refused and change nothing; more room is for admins; what is set
reaches the reconcile's read of desired state and every assignment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.api.app import create_api
from roost.controller.assign import AssignmentBook, AssignmentInputs
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.desired import Reader
from roost.controller.scheduler import Placement
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.messages import DataUse, ServiceHostStatus
from tests.migrated import migrated_sqlite
from tests.releases import go_live

MB = 1 << 20
SPEC = AppSpec(
    processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
)
Env = tuple[TestClient, Store, Controller]


def _env(tmp_path: Path, default_mb: int) -> Iterator[Env]:
    url = migrated_sqlite(tmp_path / "state.db")
    box = SecretBox(b"k" * 32)
    store = Store(make_engine(url), secrets=box)
    controller = Controller(AsyncStore(store), Settings(data_quota_mb=default_mb), "test")
    controller.services = ServiceBroker(controller.store, box, None)
    api = create_api(controller, ControllerService(controller, builders=None))
    with TestClient(api) as client:
        yield client, store, controller
    controller.store.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, 0)


@pytest.fixture
def env64(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, 64)


def _who(store: Store, email: str, admin: bool = False) -> dict[str, str]:
    account = store.create_account(email, password=None, is_admin=admin)
    return {"Authorization": f"Bearer {store.issue_token(account)}"}


def _stores(c: Controller, app: str, used_bytes: int) -> None:
    """The servicehost reported the app's tree holding `used_bytes`."""
    assert c.services is not None
    c.services.status["sh"] = ServiceHostStatus(
        data=[DataUse(app=app, used_bytes=used_bytes, quota_bytes=64 * MB)]
    )


def test_an_owner_sets_shows_and_resets_its_quota(env: Env) -> None:
    client, store, _ = env
    h = _who(store, "o@example.com")
    client.post("/api/apps", json={"name": "shop"}, headers=h)
    url = "/api/apps/shop/data/quota"
    assert client.get(url, headers=h).json() == {
        "app": "shop", "quota_mb": None, "default_mb": 0, "effective_mb": 0, "used_bytes": 0,
    }  # fmt: skip
    app_id = store.app("shop").id
    go_live(store, app_id, store.create_release(app_id, "b1", "sha256:aa", "", SPEC, "", "first"))
    before = store.desired_version()
    r = client.put(url, json={"size": "2G"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["quota_mb"] == 2048 and r.json()["effective_mb"] == 2048
    # Its instances roll onto the size through a fresh copy of the release.
    assert r.json()["release"] == 2 and store.release(app_id, 2).description == "data quota 2.0 GB"
    assert store.app("shop").data_quota_mb == 2048
    assert store.desired_version() > before  # the reconcile reads it again
    assert any(e["kind"] == "data-quota" for e in client.get("/api/events", headers=h).json())
    # Shown with the data directory (roost ps, roost services info data)
    # before the servicehost has mounted it.
    info = client.get("/api/apps/shop/services/data", headers=h).json()
    assert info["quota_bytes"] == 2048 * MB
    # Lowering is the owner's; a bare number is MiB.
    assert client.put(url, json={"size": 100}, headers=h).json()["quota_mb"] == 100
    # Back to the platform's (none here): more room, an admin's call.
    r = client.delete(url, headers=h)
    assert r.status_code == 403 and "admin" in r.json()["message"]
    admin = _who(store, "root@example.com", admin=True)
    r = client.delete(url, headers=admin)
    assert r.status_code == 200 and r.json()["quota_mb"] is None
    assert store.app("shop").data_quota_mb == 0


BAD_SIZES: list[object] = ["", "lots", "0", "3M", "-1G", "17T", "1e3M", 0, 2**40, None, []]


def test_bad_sizes_are_refused_and_change_nothing(env: Env) -> None:
    client, store, _ = env
    h = _who(store, "o@example.com")
    client.post("/api/apps", json={"name": "shop"}, headers=h)
    assert (
        client.put("/api/apps/shop/data/quota", json={"size": "8M"}, headers=h).status_code == 200
    )
    version = store.desired_version()
    for size in BAD_SIZES:
        r = client.put("/api/apps/shop/data/quota", json={"size": size}, headers=h)
        assert r.status_code == 422, (size, r.text)
    assert client.put("/api/apps/shop/data/quota", json={}, headers=h).status_code == 422
    assert store.app("shop").data_quota_mb == 8
    assert store.desired_version() == version


def test_below_what_is_stored_is_refused_and_changes_nothing(env64: Env) -> None:
    client, store, c = env64
    h = _who(store, "o@example.com")
    client.post("/api/apps", json={"name": "shop"}, headers=h)
    _stores(c, "shop", 40 * MB)
    r = client.put("/api/apps/shop/data/quota", json={"size": "32M"}, headers=h)
    assert r.status_code == 409 and "stores 40.0 MB" in r.json()["message"]
    assert store.app("shop").data_quota_mb == 0
    # Down to what it stores: fine.
    assert (
        client.put("/api/apps/shop/data/quota", json={"size": "40M"}, headers=h).json()[
            "effective_mb"
        ]
        == 40
    )


def test_more_room_than_the_platform_gives_is_for_admins(env64: Env) -> None:
    client, store, _ = env64
    owner = _who(store, "o@example.com")
    admin = _who(store, "root@example.com", admin=True)
    client.post("/api/apps", json={"name": "shop"}, headers=owner)
    r = client.put("/api/apps/shop/data/quota", json={"size": "1G"}, headers=owner)
    assert r.status_code == 403 and "64.0 MB to 1.0 GB" in r.json()["message"]
    assert store.app("shop").data_quota_mb == 0
    r = client.put("/api/apps/shop/data/quota", json={"size": "1G"}, headers=admin)
    assert r.status_code == 200 and store.app("shop").data_quota_mb == 1024
    # Someone else's app: not found, as for any app one is not a member of.
    other = _who(store, "x@example.com")
    assert (
        client.put("/api/apps/shop/data/quota", json={"size": "8M"}, headers=other).status_code
        == 404
    )


def test_the_quota_reaches_every_assignment(env: Env) -> None:
    _, store, _ = env
    account = store.create_account("o@example.com", password=None)
    store.create_app("shop", account)
    app_id = store.app("shop").id
    reader = Reader()
    first = reader.read(store, set())
    assert first is not None and first.apps[app_id] is not None
    assert first.apps[app_id].row.data_quota_mb == 0  # type: ignore[union-attr]
    store.set_data_quota(app_id, 512)
    second = reader.read(store, set())
    assert second is not None and list(second.apps) == [app_id]
    inputs = second.apps[app_id]
    assert inputs is not None and inputs.row.data_quota_mb == 512

    book = AssignmentBook()
    quota = {"mb": 0}
    placed = [Placement("shop-web-1", "shop", 1, "web", 1, "h1")]

    def src(_: Placement) -> AssignmentInputs:
        return AssignmentInputs("sha256:x", SPEC, {}, data_quota_mb=quota["mb"])

    book.update(placed, src, ["h1"])
    assert book.hosts["h1"].content[0].data_quota_mb == 0
    # A new size: the running instance keeps its assignment (no restart);
    # the fresh release's instances bring the size in.
    quota["mb"] = 512
    assert book.update(placed, src, ["h1"]) == []
    assert book.hosts["h1"].content[0].data_quota_mb == 0
    placed.append(Placement("shop-web-2", "shop", 2, "web", 1, "h1"))
    assert book.update(placed, src, ["h1"]) == ["h1"]
    assert book.hosts["h1"].content[1].data_quota_mb == 512
