"""Drains and log retention in the state database and through the API:
what `roost drains` and `roost log-retention` read and write."""

from __future__ import annotations

import time

from sqlalchemy import update

from roost.controller.logdrain_queue import DrainCounts
from roost.controller.store import Store
from roost.controller.store_drains import FOLD_AFTER_S, STATUS_FRESH_S
from roost.state import tables as t
from roost.wire.messages import LogLine
from tests.controller import apikit
from tests.controller.apikit import Env

# apikit's fixtures, found by pytest among this module's names.
env = apikit.env


def _k(delivered: int, dropped: int, failing: bool = False, error: str = "") -> DrainCounts:
    at = time.time() if error else None
    return DrainCounts(delivered, dropped, failing, error, None, at)


def test_each_controllers_counts_add_up_and_old_ones_fold(either_store: Store) -> None:
    store = either_store
    owner = store.create_account("o@example.com")
    shop = store.create_app("shop", owner)
    d = store.add_log_drain(shop.id, "syslog://logs.example.com:514")
    assert d.token.startswith("d.") and len(d.token) == 32
    store.note_drain_status("c1", {d.id: _k(10, 1)})
    store.note_drain_status("c2", {d.id: _k(5, 2, True, "x: Connection refused")})
    store.note_drain_status("c1", {d.id: _k(12, 1)})  # counts since it started: replaced
    s = store.drain_status([d.id])[d.id]
    assert (s.delivered, s.dropped, s.failing, s.last_error) == (
        17,
        3,
        True,
        "x: Connection refused",
    )
    # A controller silent past STATUS_FRESH_S no longer says it is failing...
    with store.engine.begin() as c:
        c.execute(
            update(t.log_drain_status)
            .where(t.log_drain_status.c.holder == "c2")
            .values(updated_at=time.time() - STATUS_FRESH_S - 1)
        )
    s = store.drain_status([d.id])[d.id]
    assert (s.delivered, s.failing) == (17, False)
    # ... and once gone long enough its counts are folded into one row.
    for holder in ("c1", "c2"):
        with store.engine.begin() as c:
            c.execute(
                update(t.log_drain_status)
                .where(t.log_drain_status.c.holder == holder)
                .values(updated_at=time.time() - FOLD_AFTER_S - 1)
            )
    store.note_drain_status("c3", {d.id: _k(1, 0)})
    with store.engine.connect() as c:
        holders = sorted(r.holder for r in c.execute(t.log_drain_status.select()))
    assert holders == ["*", "c3"]
    assert (
        store.drain_status([d.id])[d.id].delivered,
        store.drain_status([d.id])[d.id].dropped,
    ) == (18, 3)
    # A drain removed meanwhile is not noted again; deleting the app takes the rest.
    assert store.remove_log_drain(shop.id, d.id)
    store.note_drain_status("c3", {d.id: _k(2, 0)})
    assert store.log_drains() == []
    store.add_log_drain(shop.id, "https://logs.example.com/x")
    store.set_log_retention(shop.id, 2000, None)
    store.delete_app("shop")
    assert store.log_drains() == [] and store.log_retention() == {}


def test_retention_by_lines_and_days(either_store: Store) -> None:
    store = either_store
    owner = store.create_account("o@example.com")
    a, b, q = (store.create_app(n, owner) for n in ("a", "b", "quiet"))
    now = time.time()

    def lines(app: str, n: int, age_days: float) -> list[LogLine]:
        ts = now - age_days * 86400
        return [
            LogLine(app=app, ts=ts, source="app", line=f"{app} {age_days} {i}") for i in range(n)
        ]

    store.append_logs(
        lines("a", 10, 0) + lines("b", 10, 3) + lines("b", 2, 0) + lines("quiet", 4, 5)
    )
    store.set_log_retention(a.id, 1500, None)
    store.set_log_retention(b.id, None, 2.0)  # the platform's count, and two days
    store.set_log_retention(q.id, None, 4.0)
    store.trim_logs(keep=6)
    assert len(store.logs(a.id)) == 10  # its own 1500, not the platform's 6
    assert [r.line for r in store.logs(b.id)] == ["b 0 0", "b 0 1"]  # the old ones went
    assert store.logs(q.id) == []
    # Quiet since: its lines still age out.
    store.append_logs(lines("quiet", 1, 4.5))
    store.trim_logs(keep=6)
    store.trim_logs(keep=6)
    assert store.logs(q.id) == []
    store.set_log_retention(a.id, None, None)  # back to the default
    store.append_logs(lines("a", 1, 0))
    store.trim_logs(keep=6)
    assert len(store.logs(a.id)) == 6 and store.log_retention().keys() == {b.id, q.id}


def test_drains_through_the_api(env: Env) -> None:
    c = env.client
    for bad, why in (
        ("ftp://x:1", "not ftp"),
        ("syslog://logs.example.com", "names its port"),
        ("https://", "names a host"),
    ):
        r = c.post("/api/apps/shop/drains", json={"url": bad}, headers=env.owner)
        assert r.status_code == 422 and why in r.json()["message"], r.text
    assert c.get("/api/apps/shop/drains", headers=env.owner).json() == []
    # The platform's own networks are not a tenant's to write to (by default).
    for private in ("syslog://127.0.0.1:6379", "syslog://10.1.2.3:514", "https://localhost/",
                    "syslog+tls://[::1]:6514", "https://169.254.169.254/"):  # fmt: skip
        r = c.post("/api/apps/shop/drains", json={"url": private}, headers=env.owner)
        assert r.status_code == 422 and "ROOST_LOG_DRAIN_PRIVATE" in r.json()["message"], private
    # A name nobody answers at: accepted, shown waiting until tried.
    url = "syslog://logs.invalid:514"
    r = c.post("/api/apps/shop/drains", json={"url": url}, headers=env.collab)
    assert r.status_code == 201 and r.json()["kind"] == "syslog"
    drain_id = r.json()["id"]
    r = c.post("/api/apps/shop/drains", json={"url": url}, headers=env.owner)
    assert r.status_code == 409 and "already drains" in r.json()["message"]
    env.store.note_drain_status(
        "c1", {drain_id: _k(0, 40, True, "logs.invalid: cannot resolve: Name or service not known")}
    )
    [row] = c.get("/api/apps/shop/drains", headers=env.owner).json()
    assert (row["id"], row["state"], row["dropped"], row["delivered"]) == (
        drain_id,
        "failing",
        40,
        0,
    )
    assert row["last_error"] == "logs.invalid: cannot resolve: Name or service not known"
    assert c.get("/api/apps/shop/drains", headers=env.outsider).status_code == 404
    assert c.delete(f"/api/apps/shop/drains/{drain_id}", headers=env.outsider).status_code == 404
    assert c.delete(f"/api/apps/blog/drains/{drain_id}", headers=env.admin).status_code == 404
    assert c.delete(f"/api/apps/shop/drains/{drain_id}", headers=env.owner).status_code == 200
    assert c.get("/api/apps/shop/drains", headers=env.owner).json() == []


def test_log_retention_through_the_api(env: Env) -> None:
    c = env.client
    path = "/api/apps/shop/log-retention"
    default = env.controller.settings.log_lines_kept
    assert c.get(path, headers=env.collab).json() == {
        "lines": default, "lines_default": True, "days": None
    }  # fmt: skip
    for body in (
        {"lines": 10},
        {"days": 0},
        {"days": 1e-300},
        {"days": 0.04},
        {"days": 4000},
        {"lines": "many"},
    ):
        r = c.put(path, json=body, headers=env.owner)
        assert r.status_code == 422, body
    assert c.get(path, headers=env.owner).json()["lines_default"] is True  # nothing changed
    assert c.put(path, json={"days": 1 / 24}, headers=env.owner).json()["days"] == 1 / 24
    r = c.put(path, json={"lines": 20000, "days": 7}, headers=env.owner)
    assert r.json() == {"lines": 20000, "lines_default": False, "days": 7.0}
    assert c.get(path, headers=env.owner).json() == r.json()
    assert c.put(path, json={}, headers=env.owner).json()["lines_default"] is True
    assert c.get(path, headers=env.outsider).status_code == 404
