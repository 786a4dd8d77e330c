"""Alert targets, alerts and deliveries in the state database (store_notify.py)."""

from __future__ import annotations

import pytest

from roost.controller.notify import BadTarget, after_try
from roost.controller.secretbox import SecretBox, new_key
from roost.controller.store import Store
from roost.state import tables as t


def _sealed(store: Store) -> Store:
    return Store(store.engine, secrets=SecretBox(new_key()))


def test_alerts_reach_the_app_s_and_the_platform_s_targets(either_store: Store) -> None:
    s = _sealed(either_store)
    owner = s.create_account("o@example.com")
    shop = s.create_app("shop", owner)
    blog = s.create_app("blog", owner)
    everyone = s.add_notify_target(None, "https://ops.example.com/hook", "k1 !")
    shop_t = s.add_notify_target(shop.id, "smtp://me:pw!x@mail.example.com/a@example.com")
    s.add_notify_target(blog.id, "mailto:blog@example.com")

    s.notify_event("deploy-failed", "shop", "v2 crashed", version=2)
    s.notify_event("host-down", "", "host h1 is down", host="h1")
    due = s.due_deliveries(now=1e12)
    got = sorted((d.alert.kind, d.target_id) for d in due)
    assert got == sorted(
        [("deploy-failed", everyone), ("deploy-failed", shop_t), ("host-down", everyone)]
    )
    by_target = {d.target_id: d for d in due if d.alert.kind == "deploy-failed"}
    # What is sent carries the URL as given and the secret; what is shown does not.
    assert by_target[shop_t].url == "smtp://me:pw!x@mail.example.com/a@example.com"
    assert by_target[everyone].secret == "k1 !"
    assert by_target[everyone].alert.fields == {"version": 2}
    shown = {r.id: r for r in s.notify_targets()}
    assert shown[shop_t].url == "smtp://me:***@mail.example.com/a@example.com"
    assert shown[shop_t].app == "shop" and shown[everyone].app == ""
    with s.engine.connect() as c:
        sealed = " ".join(r.sealed for r in c.execute(t.notify_targets.select()))
    assert "pw!x" not in sealed and "k1 !" not in sealed  # (neither is base64)
    assert [r.id for r in s.notify_targets({blog.id})] != [everyone]


def test_outcomes_are_recorded_and_shown(store: Store) -> None:
    s = _sealed(store)
    tid = s.add_notify_target(None, "http://127.0.0.1:9/")
    s.notify_event("backup-failed", "", "pg_dump failed")
    (d,) = s.due_deliveries(now=1e12)
    s.record_delivery(d.delivery_id, after_try(0, "connection refused", 100.0, 10))
    assert s.due_deliveries(now=105.0) == []  # backing off
    assert len(s.due_deliveries(now=111.0)) == 1
    (row,) = s.notify_targets()
    assert (row.pending, row.failed, row.last_error) == (1, 0, "connection refused")
    (logged,) = s.notify_log({tid})
    assert (logged.kind, logged.attempts, logged.state) == ("backup-failed", 1, "pending")
    s.record_delivery(d.delivery_id, after_try(1, "", 112.0, 10))
    (row,) = s.notify_targets()
    assert (row.pending, row.delivered, row.last_error) == (0, 1, "")


def test_malformed_urls_and_kinds_are_refused(store: Store) -> None:
    s = _sealed(store)
    with pytest.raises(BadTarget):
        s.add_notify_target(None, "ftp://example.com/")
    assert s.notify_targets() == []
    with pytest.raises(ValueError, match="unknown alert kind"):
        s.notify_event("deploy-exploded", "", "")


def test_removing_a_target_or_its_app_ends_its_deliveries(store: Store) -> None:
    s = _sealed(store)
    owner = s.create_account("o@example.com")
    app = s.create_app("shop", owner)
    tid = s.add_notify_target(app.id, "https://example.com/h")
    other = s.add_notify_target(app.id, "https://example.com/i")
    s.notify_event("deploy-started", "shop", "building")
    assert s.remove_notify_target(tid) and not s.remove_notify_target(tid)
    assert [d.target_id for d in s.due_deliveries(now=1e12)] == [other]
    s.delete_app("shop")
    assert s.notify_targets() == [] and s.due_deliveries(now=1e12) == []


def test_prune_keeps_pending_deliveries(store: Store) -> None:
    s = _sealed(store)
    s.add_notify_target(None, "https://example.com/h")
    s.notify_event("host-up", "", "h1 is up")
    s.notify_event("host-down", "", "h2 is down")
    first, second = s.due_deliveries(now=1e12)
    s.record_delivery(first.delivery_id, after_try(0, "", 1.0, 10))
    assert s.prune_notify(before=1e12) == 1  # the delivered one's alert
    assert [d.alert.kind for d in s.due_deliveries(now=1e12)] == [second.alert.kind]


def test_an_app_may_be_named_by_its_id(store: Store) -> None:
    s = _sealed(store)
    owner = s.create_account("o@example.com")
    app = s.create_app("shop", owner)
    tid = s.add_notify_target(app.id, "https://example.com/h")
    s.notify_event("cert-issued", app.id, "www.shop.example: certificate issued")
    [due] = s.due_deliveries(now=1e12)
    assert (due.target_id, due.alert.app) == (tid, "shop")
