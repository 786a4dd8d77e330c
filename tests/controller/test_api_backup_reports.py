"""What the API says of backups and of what the servicehost reports, where
a user looks: a platform without a backupd answers plainly (a listing with
nothing in it and why, a 409 for what needs one, never a 5xx); a Redis
whose snapshots are off for lack of disk, and the data restores replaced,
show in `services info` and the servicehost list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.backups import NOT_CONFIGURED
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.messages import KeptCopy, ServerStatus, ServiceHostStatus
from tests.migrated import migrated_sqlite

NO_ROOM = "snapshots off: a snapshot of 900 MiB would not fit in the 300 MiB free on the disk"
BOX = SecretBox(b"k" * 32)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], ControllerService]]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    controller = Controller(AsyncStore(store), Settings(), "test")  # no backupd
    controller.services = ServiceBroker(controller.store, BOX, None)
    owner = store.create_account("o@example.com", is_admin=True)
    app = store.create_app("shop", owner)
    creds = {"app": "shop", "kind": "redis", "host": "127.0.0.1", "port": 6400,
             "database": "0", "password": "pw", "url": "redis://:pw@127.0.0.1:6400/0"}  # fmt: skip
    store.bind_service(app.id, "redis", BOX.seal(creds))
    service = ControllerService(controller, builders=None)
    with TestClient(create_api(controller, service)) as client:
        yield client, {"Authorization": f"Bearer {store.issue_token(owner)}"}, service
    controller.store.close()


def test_without_a_backupd_listings_say_so_and_changes_are_refused(
    env: tuple[TestClient, dict[str, str], ControllerService],
) -> None:
    client, auth, _ = env
    r = client.get("/api/backups", headers=auth)
    assert r.status_code == 200
    assert r.json() == {"configured": False, "message": NOT_CONFIGURED, "entries": [], "health": []}
    r = client.get("/api/apps/shop/backups", headers=auth)
    assert r.status_code == 200 and r.json()["configured"] is False
    assert r.json()["entries"] == [] and r.json()["message"] == NOT_CONFIGURED
    for method, path, body in (
        ("POST", "/api/backups", None),
        ("POST", "/api/apps/shop/backups", {"kinds": []}),
        ("POST", "/api/apps/shop/backups/restore", {"id": "x"}),
        ("PUT", "/api/apps/shop/backups/policy", {"daily": 3}),
    ):
        r = client.request(method, path, headers=auth, json=body)
        assert r.status_code == 409 and r.json()["message"] == NOT_CONFIGURED, (path, r.text)


async def test_a_redis_without_room_for_snapshots_and_kept_copies_are_shown(
    env: tuple[TestClient, dict[str, str], ControllerService],
) -> None:
    client, auth, service = env
    pushed = ServiceHostStatus(
        host="sh-1",
        servers=[
            ServerStatus(
                app="shop",
                kind="redis",
                state="up",
                memory_limit_bytes=1 << 30,
                snapshot_problem=NO_ROOM,
            ),
        ],
        kept=[
            KeptCopy(app="shop", kind="redis", name="kept/shop/redis-r2", kept_at=20.0),
            KeptCopy(app="shop", kind="data", name="kept/shop/data-r3", kept_at=30.0),
            KeptCopy(app="other", kind="redis", name="kept/other/redis-r1", kept_at=10.0),
        ],
    )
    await service.handle(pushed)  # as the servicehost pushes it
    info = client.get("/api/apps/shop/services/redis", headers=auth).json()
    assert info["snapshot_problem"] == NO_ROOM
    assert info["kept"] == [
        {"app": "shop", "kind": "redis", "name": "kept/shop/redis-r2", "kept_at": 20.0}
    ]
    (host,) = client.get("/api/servicehosts", headers=auth).json()
    assert host["servers"][0]["snapshot_problem"] == NO_ROOM
    assert [k["name"] for k in host["kept"]] == [
        "kept/shop/redis-r2", "kept/shop/data-r3", "kept/other/redis-r1",
    ]  # fmt: skip
