"""Owners and collaborators differ: a collaborator runs the app, the owner decides
what it is and who touches it. Platform-wide views are for admins only.

Each attack goes through the real API (FastAPI app, SQLite state) as a
collaborator or an outsider, and checks both the answer and that nothing
changed.
"""

from __future__ import annotations

import gzip
import time

import pytest

from roost.wire.messages import Heartbeat
from tests.controller import apikit
from tests.controller.apikit import Env

# apikit's fixtures, found by pytest among this module's names.
env = apikit.env

# What only the owner (or an admin) may do, as (method, path, json body).
OWNER_ONLY = [
    ("DELETE", "/api/apps/blog", None),
    ("POST", "/api/apps/shop/domains", {"hostname": "evil.example"}),
    ("DELETE", "/api/apps/shop/domains/www.shop.example", None),
    (
        "POST",
        "/api/apps/shop/certs",
        {"hostname": "www.shop.example", "certificate": "x", "private_key": "y"},
    ),
    ("POST", "/api/apps/shop/collaborators", {"email": "friend@example.com"}),
    ("DELETE", "/api/apps/shop/collaborators/other@example.com", None),
    ("POST", "/api/apps/shop/services", {"kind": "redis"}),
    ("DELETE", "/api/apps/shop/services/postgres", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OWNER_ONLY)
def test_collaborator_cannot_do_what_only_the_owner_does(
    env: Env, method: str, path: str, body: dict[str, str] | None
) -> None:
    before = env.snapshot()
    r = env.client.request(method, path, json=body, headers=env.collab)
    assert r.status_code == 403, r.text
    assert "owner" in r.json()["message"]
    assert env.snapshot() == before


def test_collaborator_cannot_delete_over_the_epio_api(env: Env) -> None:
    token = env.collab["Authorization"].split()[1]
    blog = env.store.app("blog").id
    r = env.client.post(f"/control/app/{blog}/delete/", headers={"X-Epio-Token": token})
    assert r.status_code == 403
    assert sorted(a.name for a in env.store.apps()) == ["blog", "shop"]
    # Suspending is a member's business there too.
    r = env.client.post(f"/control/app/{env.app.id}/suspend/", headers={"X-Epio-Token": token})
    assert r.status_code == 200


def test_outsiders_still_learn_nothing(env: Env) -> None:
    """Not a member: 404 as for a missing app, for owner-only actions too."""
    for method, path, body in OWNER_ONLY:
        r = env.client.request(method, path, json=body, headers=env.outsider)
        assert r.status_code == 404, (method, path, r.text)
    assert env.client.get("/api/apps/shop/config", headers=env.outsider).status_code == 404


def test_collaborator_runs_the_app(env: Env) -> None:
    c, h = env.client, env.collab
    assert c.get("/api/apps/shop", headers=h).status_code == 200
    assert c.patch("/api/apps/shop/config", json={"vars": {"A": "1"}}, headers=h).status_code == 200
    assert c.get("/api/apps/shop/config", headers=h).json() == {"A": "1"}
    assert c.patch("/api/apps/shop/formation", json={"quantities": {"web": 2}}, headers=h).json()
    assert c.post("/api/apps/shop/restart", json={}, headers=h).status_code == 200
    assert c.get("/api/apps/shop/releases", headers=h).status_code == 200
    assert c.get("/api/apps/shop/logs?n=5", headers=h).status_code == 200
    assert c.get("/api/apps/shop/domains", headers=h).json() == ["www.shop.example"]
    assert c.get("/api/apps/shop/collaborators", headers=h).status_code == 200
    assert c.get("/api/apps/shop/services/postgres", headers=h).json()["password"] == "pw"
    r = c.post("/api/apps/shop/builds", content=gzip.compress(b"x"), headers=h)
    assert r.status_code == 202
    # and may leave
    r = c.delete("/api/apps/shop/collaborators/collab@example.com", headers=h)
    assert r.status_code == 200
    assert env.store.collaborators(env.app.id) == ["other@example.com"]
    assert c.get("/api/apps/shop", headers=h).status_code == 404


def test_owner_and_admin_keep_their_powers(env: Env) -> None:
    c = env.client
    r = c.post(
        "/api/apps/shop/collaborators", json={"email": "friend@example.com"}, headers=env.owner
    )
    assert r.status_code == 201
    r = c.post("/api/apps/shop/domains", json={"hostname": "shop.example"}, headers=env.admin)
    assert r.status_code == 201
    r = c.delete("/api/apps/shop/collaborators/friend@example.com", headers=env.admin)
    assert r.status_code == 200
    assert c.delete("/api/apps/blog", headers=env.owner).status_code == 200
    assert [a.name for a in env.store.apps()] == ["shop"]


def test_platform_views_are_for_admins(env: Env) -> None:
    env.controller.soft.record(
        Heartbeat(host_id="h1", hostname="box1", addresses=["10.0.0.7"]), time.monotonic()
    )
    for path in ("/api/hosts", "/api/servicehosts"):
        for who in (env.owner, env.collab):
            r = env.client.get(path, headers=who)
            assert r.status_code == 403, (path, r.text)
            assert "admin" in r.json()["message"]
        assert env.client.get(path, headers=env.admin).status_code == 200
    assert [h["hostname"] for h in env.client.get("/api/hosts", headers=env.admin).json()] == [
        "box1"
    ]
    board = env.client.get("/api/dashboard", headers=env.owner).json()
    assert board["hosts"] == [] and board["admin"] is False
    board = env.client.get("/api/dashboard", headers=env.admin).json()
    assert [h["hostname"] for h in board["hosts"]] == ["box1"] and board["admin"] is True


def test_members_cancel_deploys_and_outsiders_cannot(env: Env) -> None:
    c, app_id = env.client, env.app.id
    env.store.create_build("b1", app_id)  # a deploy under way: the next ones queue
    ids = []
    for _ in range(2):
        r = c.post("/api/apps/shop/builds", content=gzip.compress(b"x"), headers=env.collab)
        ids.append(r.json()["build_id"])
    assert [env.store.build(b).status for b in ids] == ["queued", "queued"]
    r = c.post(f"/api/builds/{ids[0]}/cancel", headers=env.outsider)
    assert r.status_code == 404
    assert env.store.build(ids[0]).status == "queued"
    r = c.post(f"/api/builds/{ids[0]}/cancel", headers=env.collab)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "cancelled by collab@example.com"
    r = c.post(f"/api/builds/{ids[0]}/cancel", headers=env.owner)
    assert r.status_code == 409
    assert "already ended: cancelled by collab@example.com" in r.json()["message"]
    r = c.post(f"/api/builds/{ids[1]}/cancel", headers=env.admin)
    assert r.json()["outcome"] == "cancelled by root@example.com"
    listed = c.get("/api/apps/shop/builds", headers=env.owner).json()
    assert {b["build_id"]: b["status"] for b in listed}[ids[1]] == "cancelled"
