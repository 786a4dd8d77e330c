"""POST/DELETE /api/hosts/{host}/drain: operators only; shown in /api/hosts."""

from __future__ import annotations

import time

from roost.controller.scheduler import Placement
from roost.wire.messages import Heartbeat
from tests.controller import apikit
from tests.controller.apikit import Env

# apikit's fixtures, found by pytest among this module's names.
env = apikit.env


def test_drain_and_undrain_a_host(env: Env) -> None:
    env.controller.soft.record(
        Heartbeat(host_id="h1", hostname="box1", addresses=["10.0.0.7"]), time.monotonic()
    )
    c = env.client
    for who in (env.owner, env.collab):
        r = c.post("/api/hosts/h1/drain", headers=who)
        assert r.status_code == 403 and "admin" in r.json()["message"]
        assert c.delete("/api/hosts/h1/drain", headers=who).status_code == 403
    assert env.store.host_drains() == []
    r = c.post("/api/hosts/nowhere/drain", headers=env.admin)
    assert r.status_code == 404 and "no host nowhere" in r.json()["message"]

    r = c.post("/api/hosts/h1/drain", headers=env.admin)
    assert r.status_code == 200 and r.json()["changed"] is True
    assert c.post("/api/hosts/h1/drain", headers=env.admin).json()["changed"] is False
    [row] = c.get("/api/hosts", headers=env.admin).json()
    assert row["drained"] is True and row["drain_note"] == ""
    # `roost ps` shows it to the app's members, beside each instance's host.
    web = Placement("shop-web-1", "shop", 1, "web", 1, "h1")
    env.store.replace_placements([], [web], {"shop": env.app.id})
    [ps] = c.get("/api/apps/shop/ps", headers=env.collab).json()
    assert ps["host"] == "box1" and ps["host_drained"] is True
    env.store.note_host_drains({"h1": "no other host has room for shop web.1"})
    [row] = c.get("/api/hosts", headers=env.admin).json()
    assert row["drain_note"] == "no other host has room for shop web.1"

    r = c.delete("/api/hosts/h1/drain", headers=env.admin)
    assert r.status_code == 200 and r.json()["changed"] is True
    assert c.delete("/api/hosts/h1/drain", headers=env.admin).json()["changed"] is False
    [row] = c.get("/api/hosts", headers=env.admin).json()
    assert row["drained"] is False
    assert c.get("/api/apps/shop/ps", headers=env.owner).json()[0]["host_drained"] is False
