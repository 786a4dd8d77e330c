from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from fastapi.testclient import TestClient

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.selfsigned import generate_self_signed
from roost.settings import Settings
from roost.state.db import make_engine
from tests.migrated import migrated_sqlite
from tests.releases import go_live

SPEC = AppSpec(
    processes={
        "web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True),
        "worker": ProcessSpec(name="worker", kind="command", command="python worker.py"),
    }
)
ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop"
)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, Store, Controller]]:
    url = migrated_sqlite(tmp_path / "state.db")
    box = SecretBox(b"k" * 32)
    store = Store(make_engine(url), secrets=box)
    controller = Controller(AsyncStore(store), Settings(), "test")
    controller.services = ServiceBroker(controller.store, box, None)
    api = create_api(controller, ControllerService(controller, builders=None))
    with TestClient(api) as client:
        yield client, store, controller
    controller.store.close()


def _account(
    store: Store, email: str, admin: bool = False, password: str | None = None
) -> dict[str, str]:
    account = store.create_account(email, password=password, is_admin=admin)
    return {"Authorization": f"Bearer {store.issue_token(account)}"}


def _released_app(client: TestClient, store: Store, h: dict[str, str], name: str = "shop") -> int:
    client.post("/api/apps", json={"name": name}, headers=h)
    app = store.app(name)
    v = store.create_release(app.id, "b1", "sha256:aa", "", SPEC, "flask==3.0", "first")
    go_live(store, app.id, v)
    store.set_formation(app.id, {"web": 2, "worker": 1})
    return app.id


def test_login_and_tokens(env: tuple[TestClient, Store, Controller]) -> None:
    client, store, _ = env
    admin = _account(store, "root@example.com", admin=True)
    r = client.post(
        "/api/accounts", json={"email": "u@example.com", "password": "s3cret-pass"}, headers=admin
    )
    assert r.status_code == 201
    assert (
        client.post("/api/login", json={"email": "u@example.com", "password": "wrong"}).status_code
        == 401
    )
    tok = client.post(
        "/api/login", json={"email": "u@example.com", "password": "s3cret-pass"}
    ).json()["token"]
    h = {"Authorization": f"Bearer {tok}"}
    assert client.get("/api/account", headers=h).json()["email"] == "u@example.com"
    # non-admins cannot create accounts
    assert (
        client.post(
            "/api/accounts", json={"email": "x@example.com", "password": "12345678"}, headers=h
        ).status_code
        == 403
    )
    tokens = client.get("/api/tokens", headers=h).json()
    assert client.delete(f"/api/tokens/{tokens[0]['id']}", headers=h).status_code == 200
    assert client.get("/api/account", headers=h).status_code == 401  # revoked
    assert store.account_by_email("u@example.com").password_hash.startswith("$argon2")


def test_config_set_creates_release_with_snapshot(
    env: tuple[TestClient, Store, Controller],
) -> None:
    client, store, _ = env
    h = _account(store, "a@example.com")
    app_id = _released_app(client, store, h)
    r = client.patch(
        "/api/apps/shop/config", json={"vars": {"GREETING": "hi", "DEBUG": "1"}}, headers=h
    )
    assert r.status_code == 200 and r.json()["release"] == 2
    assert store.release(app_id, 2).config == {"DEBUG": "1", "GREETING": "hi"}
    assert store.release(app_id, 2).image_digest == "sha256:aa"
    r = client.patch("/api/apps/shop/config", json={"vars": {"DEBUG": None}}, headers=h)
    assert client.get("/api/apps/shop/config", headers=h).json() == {"GREETING": "hi"}
    assert (
        client.patch("/api/apps/shop/config", json={"vars": {"1BAD": "x"}}, headers=h).status_code
        == 422
    )
    assert (
        client.patch("/api/apps/shop/config", json={"vars": "nope"}, headers=h).status_code == 422
    )
    # The graceful timeout runners read is checked when it is set.
    for bad in ("0", "-3", "2.5", "soon", "3601"):
        r = client.patch(
            "/api/apps/shop/config", json={"vars": {"ROOST_GRACEFUL_TIMEOUT": bad}}, headers=h
        )
        assert r.status_code == 422 and "ROOST_GRACEFUL_TIMEOUT must be whole seconds" in r.text
    r = client.patch(
        "/api/apps/shop/config", json={"vars": {"ROOST_GRACEFUL_TIMEOUT": "45"}}, headers=h
    )
    assert r.status_code == 200 and r.json()["config"]["ROOST_GRACEFUL_TIMEOUT"] == "45"
    # So are gunicorn's workers, threads and preloading; a refused patch changes nothing.
    before = client.get("/api/apps/shop/config", headers=h).json()
    for key, bad in (
        ("ROOST_WEB_WORKERS", "0"),
        ("ROOST_WEB_WORKERS", "many"),
        ("ROOST_WEB_THREADS", "65"),
        ("ROOST_WEB_PRELOAD", "maybe"),
    ):
        r = client.patch(
            "/api/apps/shop/config", json={"vars": {"GREETING": "changed", key: bad}}, headers=h
        )
        assert r.status_code == 422 and f"{key} must be" in r.text
    assert client.get("/api/apps/shop/config", headers=h).json() == before
    r = client.patch(
        "/api/apps/shop/config",
        json={
            "vars": {"ROOST_WEB_WORKERS": "1", "ROOST_WEB_THREADS": "4", "ROOST_WEB_PRELOAD": "off"}
        },
        headers=h,
    )
    assert r.status_code == 200 and r.json()["config"]["ROOST_WEB_THREADS"] == "4"


def test_scale_validates(env: tuple[TestClient, Store, Controller]) -> None:
    client, store, _ = env
    h = _account(store, "a@example.com")
    _released_app(client, store, h)
    r = client.patch(
        "/api/apps/shop/formation", json={"quantities": {"web": 3, "worker": 0}}, headers=h
    )
    assert r.status_code == 200 and r.json() == {"web": 3, "worker": 0}
    assert (
        client.patch(
            "/api/apps/shop/formation", json={"quantities": {"nope": 1}}, headers=h
        ).status_code
        == 422
    )
    assert (
        client.patch(
            "/api/apps/shop/formation", json={"quantities": {"web": -1}}, headers=h
        ).status_code
        == 422
    )
    assert (
        client.patch(
            "/api/apps/shop/formation", json={"quantities": {"web": 1000}}, headers=h
        ).status_code
        == 422
    )
    # Sizes: MB per instance of a type, 64 MB to 64 GB (0: back to the default).
    for bad in (32, 1 << 20, -1):
        r = client.patch("/api/apps/shop/formation", json={"sizes": {"web": bad}}, headers=h)
        assert r.status_code == 422 and "memory" in r.json()["message"]
    r = client.patch("/api/apps/shop/formation", json={"sizes": {"web": 512}}, headers=h)
    assert r.status_code == 200 and r.json() == {"web": 3, "worker": 0}
    assert store.formation_sizes(store.app("shop").id) == {"web": 512, "worker": 0}


def test_a_singleton_scales_to_one_at_most(env: tuple[TestClient, Store, Controller]) -> None:
    client, store, _ = env
    h = _account(store, "a@example.com")
    app_id = _released_app(client, store, h)
    clock = msgspec.structs.replace(SPEC, singletons=["worker"])
    go_live(store, app_id, store.create_release(app_id, "b2", "sha256:bb", "", clock, "", "v2"))
    r = client.patch("/api/apps/shop/formation", json={"quantities": {"worker": 2}}, headers=h)
    assert r.status_code == 422
    assert r.json()["message"] == "worker is a singleton (app.json formation): 0 or 1, not 2"
    r = client.patch(
        "/api/apps/shop/formation", json={"quantities": {"worker": 0, "web": 4}}, headers=h
    )
    assert r.status_code == 200 and r.json() == {"web": 4, "worker": 0}


def test_rollback_restart_suspend(env: tuple[TestClient, Store, Controller]) -> None:
    client, store, _ = env
    h = _account(store, "a@example.com")
    app_id = _released_app(client, store, h)
    assert (
        client.post("/api/apps/shop/rollback", json={}, headers=h).status_code == 409
    )  # nothing earlier
    v2 = store.create_release(app_id, "b2", "sha256:bb", "", SPEC, "", "second")
    go_live(store, app_id, v2)
    r = client.post("/api/apps/shop/rollback", json={}, headers=h)
    assert r.status_code == 200 and r.json()["from"] == 1
    assert store.release(app_id, r.json()["release"]).image_digest == "sha256:aa"
    assert (
        client.post("/api/apps/shop/rollback", json={"version": 99}, headers=h).status_code == 404
    )
    assert client.post("/api/apps/shop/restart", json={}, headers=h).status_code == 200
    assert (
        client.post("/api/apps/shop/restart", json={"process": "worker"}, headers=h).status_code
        == 200
    )
    assert (
        client.post("/api/apps/shop/restart", json={"process": "nope"}, headers=h).status_code
        == 422
    )
    assert client.post("/api/apps/shop/suspend", headers=h).json()["suspended"] is True
    assert store.app("shop").suspended
    assert client.post("/api/apps/shop/resume", headers=h).json()["suspended"] is False


def _self_signed(host: str) -> tuple[str, str]:
    cert, key = generate_self_signed([host], days=30)
    return cert.decode(), key.decode()


def test_domains_and_certificates(env: tuple[TestClient, Store, Controller]) -> None:
    client, store, _ = env
    h, other = _account(store, "a@example.com"), _account(store, "b@example.com")
    _released_app(client, store, h)
    client.post("/api/apps", json={"name": "theirs"}, headers=other)
    assert (
        client.post(
            "/api/apps/shop/domains", json={"hostname": "www.shop.example"}, headers=h
        ).status_code
        == 201
    )
    assert (
        client.post(
            "/api/apps/theirs/domains", json={"hostname": "www.shop.example"}, headers=other
        ).status_code
        == 409
    )
    assert (
        client.post(
            "/api/apps/shop/domains", json={"hostname": "not a host"}, headers=h
        ).status_code
        == 422
    )
    assert client.get("/api/apps/shop/domains", headers=h).json() == ["www.shop.example"]
    cert, key = _self_signed("www.shop.example")
    r = client.post(
        "/api/apps/shop/certs",
        json={"hostname": "www.shop.example", "certificate": cert, "private_key": key},
        headers=h,
    )
    assert r.status_code == 201
    _, other_key = _self_signed("www.shop.example")
    r = client.post(
        "/api/apps/shop/certs",
        json={"hostname": "www.shop.example", "certificate": cert, "private_key": other_key},
        headers=h,
    )
    assert r.status_code == 422 and "does not belong" in r.json()["message"]
    r = client.post(
        "/api/apps/shop/certs",
        json={"hostname": "evil.example", "certificate": cert, "private_key": key},
        headers=h,
    )
    assert r.status_code == 422
    assert client.delete("/api/apps/shop/domains/www.shop.example", headers=h).status_code == 200


def test_ssh_keys_and_collaborators(env: tuple[TestClient, Store, Controller]) -> None:
    client, store, _ = env
    h, bob = _account(store, "a@example.com"), _account(store, "bob@example.com")
    r = client.post("/api/keys", json={"key": ED25519}, headers=h)
    assert r.status_code == 201 and r.json()["fingerprint"].startswith("SHA256:")
    assert client.post("/api/keys", json={"key": ED25519}, headers=bob).status_code == 409
    assert (
        client.post("/api/keys", json={"key": "ssh-ed25519 notbase64!!"}, headers=h).status_code
        == 422
    )
    fp = client.get("/api/keys", headers=h).json()[0]["fingerprint"]
    _released_app(client, store, h)
    assert client.get("/api/apps/shop", headers=bob).status_code == 404
    assert (
        client.post(
            "/api/apps/shop/collaborators", json={"email": "bob@example.com"}, headers=h
        ).status_code
        == 201
    )
    assert client.get("/api/apps/shop", headers=bob).status_code == 200
    assert [a["name"] for a in client.get("/api/apps", headers=bob).json()] == ["shop"]
    assert client.delete(f"/api/keys/{fp}", headers=h).status_code == 200
    assert client.get("/api/keys", headers=h).json() == []


def test_events_and_where(env: tuple[TestClient, Store, Controller]) -> None:
    client, store, _ = env
    h = _account(store, "a@example.com")
    _released_app(client, store, h)
    assert any(e["kind"] == "app-created" for e in client.get("/api/events", headers=h).json())
    assert client.get("/api/apps/shop/where", headers=h).json() == []
    assert client.get("/api/events?limit=0", headers=h).status_code == 422


def test_epio_compatibility(env: tuple[TestClient, Store, Controller]) -> None:
    client, store, _ = env
    store.create_account("old@example.com", password="hunter22")
    r = client.post(
        "/control/token/", headers={"X-Epio-Email": "old@example.com", "X-Epio-Password": "nope"}
    )
    assert r.status_code == 401 and "message" in r.json()
    r = client.post(
        "/control/token/",
        headers={"X-Epio-Email": "old@example.com", "X-Epio-Password": "hunter22"},
    )
    assert r.status_code == 200 and isinstance(r.json(), str)
    h = {"X-Epio-Token": r.json()}
    assert client.post("/control/app/create/", data={"name": "legacy"}).status_code == 401
    r = client.post("/control/app/create/", data={"name": "legacy"}, headers=h)
    assert r.status_code == 201 and r.json() == {"app": {"names": ["legacy"]}}
    assert (
        client.post("/control/app/create/", data={"name": "legacy"}, headers=h).status_code == 409
    )
    r = client.post("/control/app/create/", data={"name": "Bad Name"}, headers=h)
    assert r.status_code == 200 and "name" in r.json()["form"]["errors"]
    r = client.post("/control/app/create/", data={"name": "etc"}, headers=h)
    assert "reserved" in r.json()["form"]["errors"]["name"][0]
    r = client.post("/control/app/create/", data={"name": "<random>"}, headers=h)
    assert r.status_code == 201 and r.json()["app"]["names"][0].startswith("app-")
    app_id = client.get("/control/app/name/legacy/", headers=h).json()["app"]["id"]
    assert client.get("/control/app/name/nothere/", headers=h).status_code == 404
    assert client.get(f"/control/app/{app_id}/processes/", headers=h).json() == {"processes": {}}
    assert client.post(f"/control/app/{app_id}/suspend/", headers=h).status_code == 200
    assert store.app("legacy").suspended
    assert client.post(f"/control/app/{app_id}/resume/", headers=h).status_code == 200
    assert client.post("/account/sshkeys/", data={"key": ED25519}, headers=h).status_code == 200
    assert store.account_for_ssh_key(store.ssh_keys()[0].fingerprint).email == "old@example.com"
    assert client.post(f"/control/app/{app_id}/delete/", headers=h).status_code == 200
    assert client.get("/control/app/name/legacy/", headers=h).status_code == 404
    assert (
        client.get("/control/app/name/legacy/", headers={"X-Epio-Token": "bad"}).status_code == 401
    )
