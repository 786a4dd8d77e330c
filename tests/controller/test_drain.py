"""Draining: a routed web instance leaves the route table first and its host's
assignment `drain_s` later. The decision with a fake clock, then one real
reconcile pass on SQLite (tests/controller/test_reconcile.py's set-up)."""

from __future__ import annotations

import time

from roost.controller.drain import DrainBook, to_drain
from roost.controller.scheduler import Placement
from roost.controller.store import Store
from roost.settings import Settings
from tests.controller import reconcilekit
from tests.controller.reconcilekit import beat, leader
from tests.releases import go_live

# reconcilekit's fixtures, found by pytest among this module's names.
astore, store = reconcilekit.astore, reconcilekit.store


def web(iid: str, release: int, host: str = "h1", ptype: str = "web") -> Placement:
    return Placement(iid, "shop", release, ptype, int(iid[-1]), host)


OLD = [web("a1", 1), web("a2", 1, "h2"), web("w1", 1, ptype="worker")]
NEW = [web("b1", 2), web("b2", 2, "h2"), web("x1", 2, ptype="worker")]
LIVE = {"h1", "h2"}
ROUTED = {"a1", "a2"}  # the published table: the serving release's web instances


def ids(ps: list[Placement]) -> set[str]:
    return {p.instance_id for p in ps}


def test_promotion_keeps_the_old_web_instances_assigned_for_the_drain() -> None:
    book = DrainBook()
    assert book.stage("shop", OLD, set(), LIVE, 0.0, 3.0) == OLD
    # v2 is promoted: the old web instances drain, the old worker stops at once.
    staged = book.stage("shop", NEW, ROUTED, LIVE, 10.0, 3.0)
    assert ids(staged) == ids(NEW) | {"a1", "a2"}
    assert ids(book.draining("shop")) == {"a1", "a2"}
    assert book.due(12.9) == set()
    # The next pass before the end changes nothing (and the table no longer routes them).
    assert ids(book.stage("shop", NEW, {"b1", "b2"}, LIVE, 11.0, 3.0)) == ids(staged)
    assert book.due(13.0) == {"shop"}
    # Once the time is up, the first pass drops them: their runners stop them.
    assert book.stage("shop", NEW, {"b1", "b2"}, LIVE, 13.0, 3.0) == NEW
    assert book.draining("shop") == [] and book.due(100.0) == set()


def test_what_was_not_routed_stops_at_once() -> None:
    # A failed release's instances (never routed), one on a host that is down,
    # and no drain at all when drain_s is 0.
    assert to_drain(NEW, set(), ROUTED, LIVE, 0.0, 3.0) == []
    [d] = to_drain(OLD, set(), ROUTED, {"h2"}, 0.0, 3.0)
    assert d.placement.instance_id == "a2" and d.until == 3.0
    assert to_drain(OLD, set(), ROUTED, LIVE, 0.0, 0.0) == []


def test_scale_down_drains_the_dropped_instance_only() -> None:
    book = DrainBook()
    book.stage("shop", OLD[:2], set(), LIVE, 0.0, 3.0)
    staged = book.stage("shop", OLD[:1], ROUTED, LIVE, 1.0, 3.0)
    assert staged == [OLD[0], OLD[1]] and ids(book.draining("shop")) == {"a2"}
    # Scaled up again while it drains: a new instance; the drained one still goes.
    again = [OLD[0], web("c2", 1, "h2")]
    assert ids(book.stage("shop", again, {"a1"}, LIVE, 2.0, 3.0)) == {"a1", "c2", "a2"}
    assert book.stage("shop", again, {"a1"}, LIVE, 4.0, 3.0) == again
    # A deleted app's drains are forgotten.
    book.stage("shop", [], {"a1", "c2"}, LIVE, 5.0, 3.0)
    assert book.due(9.0) == {"shop"}
    book.forget(["shop"])
    assert book.due(9.0) == set() and book.draining("shop") == []


async def test_a_promoted_release_drains_its_predecessor_in_a_real_pass(
    store: Store,
    astore: object,
) -> None:
    c, _ = leader(astore)  # type: ignore[arg-type]
    c.settings = Settings(host_grace_s=5.0, drain_s=600.0)  # no drain ends in this test
    for _ in range(2):  # placed, then routed once up
        for h in ("h1", "h2"):
            beat(c, h, time.monotonic())
        await c.reconcile_once()
    old = {b.instance_id for b in c.routes["shop"].backends}
    assert len(old) == 2
    app = store.app("shop")
    v2 = store.create_release(
        app.id, "b2", "sha256:img2", "", store.release(app.id, 1).spec, "", "2"
    )
    await c.reconcile_once()  # v2 placed beside v1
    for h in ("h1", "h2"):
        beat(c, h, time.monotonic())
    go_live(store, app.id, v2)
    await c.reconcile_once()
    assigned = {i.instance_id for a in c.assignments.values() for i in a.content}
    routed = {b.instance_id for b in c.routes["shop"].backends}
    assert {p.release for p in store.placements("shop")} == {2}
    # The route table names v2's instances alone; v1's are still assigned.
    assert routed and not routed & old
    assert old <= assigned and routed <= assigned


async def test_the_pass_that_promotes_routes_the_release_and_the_old_one_still_drains(
    store: Store,
    astore: object,
) -> None:
    # `roost deploy` prints "is live" when the rollout's verdict is written:
    # a request sent on that must reach the new release, so the pass that
    # promotes routes it; the old instances have then left the table before
    # the next pass drops them, and must still drain.
    c, _ = leader(astore)  # type: ignore[arg-type]
    c.settings = Settings(host_grace_s=5.0, drain_s=600.0)  # no drain ends in this test
    for _ in range(2):
        for h in ("h1", "h2"):
            beat(c, h, time.monotonic())
        await c.reconcile_once()
    old = {b.instance_id for b in c.routes["shop"].backends}
    app = store.app("shop")
    v2 = store.create_release(
        app.id, "b2", "sha256:img2", "", store.release(app.id, 1).spec, "", "2"
    )
    await c.reconcile_once()  # v2 placed beside v1
    for h in ("h1", "h2"):
        beat(c, h, time.monotonic())  # v2's instances report up
    await c.reconcile_once()  # the rollout's verdict: live
    assert store.app("shop").current_release == v2
    routed = {b.instance_id for b in c.routes["shop"].backends}
    assert c.routes["shop"].release == v2
    assert len(routed) == 2 and not routed & old
    await c.reconcile_once()  # v1's placements go
    assert {p.release for p in store.placements("shop")} == {v2}
    assigned = {i.instance_id for a in c.assignments.values() for i in a.content}
    assert old <= assigned and routed <= assigned
    assert {p.instance_id for p in c._drains.draining("shop")} == old


def test_an_instance_that_left_the_table_lately_still_drains() -> None:
    book = DrainBook()
    book.stage("shop", OLD, set(), LIVE, 0.0, 3.0)
    book.unrouted("shop", ["a1", "a2"], 10.0, 3.0)  # the promoting pass's table
    staged = book.stage("shop", NEW, {"b1", "b2"}, LIVE, 10.1, 3.0)
    assert ids(book.draining("shop")) == {"a1", "a2"} and ids(staged) >= {"a1", "a2"}
    # Left long enough ago that every router has the table: stops at once.
    book = DrainBook()
    book.stage("shop", OLD, set(), LIVE, 0.0, 3.0)
    book.unrouted("shop", ["a1", "a2"], 10.0, 3.0)
    assert book.stage("shop", NEW, {"b1", "b2"}, LIVE, 13.5, 3.0) == NEW
