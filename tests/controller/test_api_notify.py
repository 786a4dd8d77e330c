"""/api/notify: who may add, see and remove alert targets; bad URLs refused."""

from __future__ import annotations

from roost.controller.secretbox import SecretBox
from tests.controller import apikit
from tests.controller.apikit import Env

# apikit's fixtures, found by pytest among this module's names.
env = apikit.env


def _sealing(e: Env) -> None:
    e.store.secrets = SecretBox(b"n" * 32)  # the daemon's store has its key


def test_members_manage_their_app_s_targets_operators_the_platform_s(env: Env) -> None:
    _sealing(env)
    c = env.client
    r = c.post("/api/notify", json={"url": "https://8.8.4.4/a", "app": "shop",
                                    "secret": "s"}, headers=env.collab)  # fmt: skip
    assert r.status_code == 201 and r.json()["app"] == "shop" and r.json()["state"] == "waiting"
    shop_t = r.json()["id"]
    # An outsider learns nothing of the app; platform targets are for operators.
    r = c.post(
        "/api/notify", json={"url": "https://x.example/", "app": "shop"}, headers=env.outsider
    )
    assert r.status_code == 404
    r = c.post("/api/notify", json={"url": "https://x.example/"}, headers=env.owner)
    assert r.status_code == 403 and "admin" in r.json()["message"]
    r = c.post(
        "/api/notify", json={"url": "smtp://u:pw@mail.example.com/ops@example.com"},
        headers=env.admin,
    )  # fmt: skip
    assert r.status_code == 201 and r.json()["app"] is None
    assert r.json()["url"] == "smtp://u:***@mail.example.com/ops@example.com"
    platform_t = r.json()["id"]

    assert [t["id"] for t in c.get("/api/notify", headers=env.owner).json()] == [shop_t]
    assert c.get("/api/notify", headers=env.outsider).json() == []
    assert {t["id"] for t in c.get("/api/notify", headers=env.admin).json()} == {
        shop_t, platform_t,
    }  # fmt: skip
    assert c.get("/api/notify?app=shop", headers=env.outsider).status_code == 404

    assert c.delete(f"/api/notify/{platform_t}", headers=env.owner).status_code == 403
    assert c.delete(f"/api/notify/{shop_t}", headers=env.outsider).status_code == 404
    assert c.delete(f"/api/notify/{shop_t}", headers=env.owner).json()["removed"] is True
    assert c.delete(f"/api/notify/{shop_t}", headers=env.owner).status_code == 404
    assert [t["id"] for t in c.get("/api/notify", headers=env.admin).json()] == [platform_t]


def test_malformed_urls_are_refused_with_why(env: Env) -> None:
    _sealing(env)
    for url in ("ftp://example.com/", "https:///", "mailto:nobody", "not a url"):
        r = env.client.post("/api/notify", json={"url": url, "app": "shop"}, headers=env.owner)
        assert r.status_code == 422, url
        assert "message" in r.json()
    assert env.store.notify_targets() == []


def test_the_log_shows_each_delivery(env: Env) -> None:
    _sealing(env)
    c = env.client
    r = c.post("/api/notify", json={"url": "http://127.0.0.1:9/", "app": "shop"}, headers=env.admin)
    tid = r.json()["id"]
    env.store.notify_event("deploy-started", "shop", "deploy b1", build="b1")
    env.store.notify_event("deploy-started", "blog", "deploy b2")  # no target of blog's
    [row] = c.get("/api/notify/log", headers=env.collab).json()
    assert (row["target"], row["event"], row["app"], row["state"]) == (
        tid, "deploy-started", "shop", "pending",
    )  # fmt: skip
    assert c.get("/api/notify/log", headers=env.outsider).json() == []
    assert c.get(f"/api/notify/log?target={tid}", headers=env.outsider).status_code == 404
    assert len(c.get(f"/api/notify/log?target={tid}", headers=env.admin).json()) == 1
    # An id past what the database stores is refused, not a 500 (the API fuzzer's find).
    for bad in (10**20, 2**31, 0, -1):
        r = c.get(f"/api/notify/log?target={bad}", headers=env.admin)
        assert r.status_code == 422, (bad, r.status_code, r.text)


def test_a_member_s_target_may_not_point_inside_the_platform(env: Env) -> None:
    _sealing(env)
    c = env.client
    for url in ("http://127.0.0.1:8000/api/apps", "http://localhost/", "https://169.254.169.254/",
                "smtp://10.0.0.5/ops@example.com"):  # fmt: skip
        r = c.post("/api/notify", json={"url": url, "app": "shop"}, headers=env.owner)
        assert r.status_code == 422 and "private address" in r.json()["message"], url
    assert env.store.notify_targets() == []
    # An operator's may (a chat server on the operators' own network).
    r = c.post("/api/notify", json={"url": "http://10.0.0.5/", "app": "shop"}, headers=env.admin)
    assert r.status_code == 201
