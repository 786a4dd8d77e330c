"""Host drains (controller/hostdrain.py): make-before-break, as data."""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Mapping

import msgspec

from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.hostdrain import Around, HostDrains, place_around
from roost.controller.scheduler import HostInfo, Placement, Want
from roost.controller.store import Store
from roost.settings import Settings
from tests.controller import reconcilekit
from tests.controller.reconcilekit import beat, leader

# reconcilekit's fixtures, found by pytest among this module's names.
astore, store = reconcilekit.astore, reconcilekit.store

WEB = Want("app", 1, "web", 2)
HOSTS = [HostInfo("a", True), HostInfo("b", True), HostInfo("c", True)]


def ids() -> Callable[[Want, int], str]:
    n = iter(range(1, 10**6))
    return lambda w, idx: f"{w.process_type}.{idx}-{next(n)}"


def p(iid: str, host: str, idx: int, ptype: str = "web") -> Placement:
    return Placement(iid, "app", 1, ptype, idx, host)


def run(
    current: list[Placement],
    *,
    drained: Container[str] = ("a",),
    up: Container[str] = (),
    routed: Mapping[str, Container[str]] | None = None,
    wants: list[Want] | None = None,
    hosts: list[HostInfo] | None = None,
    singletons: Container[str] = (),
    new_id: Callable[[Want, int], str] | None = None,
) -> Around:
    return place_around(
        wants if wants is not None else [WEB],
        current,
        hosts if hosts is not None else HOSTS,
        drained,
        up,
        routed or {},
        lambda pl: pl.process_type in singletons,
        new_id or ids(),
        None,
        None,
    )


def test_replacement_is_placed_elsewhere_and_the_old_one_stays() -> None:
    old = [p("w1", "a", 1), p("w2", "b", 2)]
    out = run(old, up={"w1", "w2"}, routed={"app": {"w1", "w2"}})
    assert old[0] in out.placements and old[1] in out.placements
    new = [x for x in out.placements if x not in old]
    assert len(new) == 1
    assert new[0].host_id == "c" and new[0].idx == 1  # the leaving one's index
    assert out.waiting == [old[0]] and out.stuck == []


def test_the_old_one_stays_until_its_replacement_is_up_and_routed() -> None:
    old = [p("w1", "a", 1), p("w2", "b", 2), p("r1", "c", 1)]  # r1: placed last pass
    # Up but not yet in the published table: the old one still serves.
    out = run(old, up={"w1", "w2", "r1"}, routed={"app": {"w1", "w2"}})
    assert p("w1", "a", 1) in out.placements
    # Routed: the old one is dropped (drain.py then drains it).
    out = run(old, up={"w1", "w2", "r1"}, routed={"app": {"w1", "w2", "r1"}})
    assert [x.instance_id for x in out.placements] == ["r1", "w2"]
    assert out.waiting == [] and out.stuck == []


def test_an_unrouted_type_needs_its_replacement_up_only() -> None:
    worker = Want("app", 1, "worker", 1)
    old = [p("k1", "a", 1, "worker"), p("k2", "b", 1, "worker")]  # k2: the replacement
    out = run(old, wants=[worker], up={"k1"})
    assert {x.instance_id for x in out.placements} == {"k1", "k2"}
    out = run(old, wants=[worker], up={"k1", "k2"})
    assert [x.instance_id for x in out.placements] == ["k2"]


def test_a_replacement_that_never_comes_up_keeps_the_old_one() -> None:
    old = [p("w1", "a", 1), p("w2", "b", 2), p("r1", "c", 1)]
    for _ in range(3):
        out = run(old, up={"w1", "w2"}, routed={"app": {"w1", "w2"}})
        assert {x.instance_id for x in out.placements} == {"w1", "w2", "r1"}
        old = out.placements


def test_nowhere_to_go_leaves_the_instance_and_says_so() -> None:
    hosts = [HostInfo("a", True, 512), HostInfo("b", True, 256)]
    old = [p("w1", "a", 1), p("w2", "b", 2)]  # b is full (256 MB each)
    out = run(old, hosts=hosts, up={"w1", "w2"}, routed={"app": {"w1", "w2"}})
    assert sorted(x.instance_id for x in out.placements) == ["w1", "w2"]
    assert out.stuck == [old[0]]
    book = HostDrains()
    book.absorb({"a"})
    book.decided(["app"], out)
    notes = book.notes_now()
    assert notes is not None and "no other host has room for app web.1" in notes["a"]
    assert book.notes_now() is None  # unchanged: nothing to write


def test_no_new_placement_lands_on_a_drained_host() -> None:
    out = run([], wants=[Want("app", 1, "web", 3)], drained={"a", "b"})
    assert {x.host_id for x in out.placements} == {"c"}
    assert len(out.placements) == 3


def test_a_type_no_longer_wanted_leaves_at_once() -> None:
    old = [p("w1", "a", 1), p("w2", "b", 2)]
    # One wanted, and w2 elsewhere is ready: w1 goes at once.
    out = run(old, wants=[Want("app", 1, "web", 1)], up={"w1", "w2"})
    assert [x.instance_id for x in out.placements] == ["w2"]
    out = run(old, wants=[], up={"w1", "w2"})
    assert out.placements == [] and out.waiting == []


def test_a_singleton_stops_first() -> None:
    clock = Want("app", 1, "clock", 1)
    old = [p("c1", "a", 1, "clock")]
    out = run(old, wants=[clock], up={"c1"}, singletons={"clock"})
    assert out.placements == []  # dropped, and not yet placed elsewhere
    # Once it is gone (no placement), the next pass places it on an open host.
    out = run([], wants=[clock], singletons={"clock"})
    assert [x.host_id for x in out.placements] in (["b"], ["c"])


def test_a_drained_host_that_is_down_is_the_usual_replacement() -> None:
    hosts = [HostInfo("a", False), HostInfo("b", True), HostInfo("c", True)]
    old = [p("w1", "a", 1), p("w2", "b", 2)]
    out = run(old, hosts=hosts, up={"w2"})
    assert all(x.host_id != "a" for x in out.placements)
    assert len(out.placements) == 2 and out.waiting == []


def test_passes_converge_to_an_empty_host() -> None:
    """Pass after pass, with replacements coming up one pass later: the
    drained host ends empty and the type never had fewer ready copies."""
    old = [p("w1", "a", 1), p("w2", "a", 2), p("w3", "b", 3)]
    want = Want("app", 1, "web", 3)
    up = {"w1", "w2", "w3"}
    routed = set(up)
    new_id = ids()
    for _ in range(6):
        out = run(old, wants=[want], up=up, routed={"app": routed}, new_id=new_id)
        ready = [x for x in out.placements if x.instance_id in up and x.instance_id in routed]
        assert len(ready) >= 3
        old = out.placements
        # what this pass placed comes up, and the next table routes it
        up |= {x.instance_id for x in old}
        routed = {x.instance_id for x in old}
    assert all(x.host_id != "a" for x in old) and len(old) == 3


def test_drained_set_changes_are_noticed() -> None:
    book = HostDrains()
    assert book.absorb(["a"]) is True
    assert book.absorb(["a"]) is False
    assert book.notes_now() == {"a": ""}
    assert book.absorb([]) is True
    assert book.notes_now() == {}


# ------------------------------------------------------------ a real reconcile pass


async def test_a_drained_host_empties_after_its_replacements_serve_in_real_passes(
    store: Store,
    astore: AsyncStore,
) -> None:
    """SQLite, the real Controller: hosts h1..h3, web x2. h1 is drained: its
    instance stays assigned and routed until the replacement on h3 is up and
    routed; then it leaves the table, drains (drain_s) and leaves h1's
    assignment. A second holder reading the same store goes on with it."""
    c, _ = leader(astore)
    c.settings = Settings(host_grace_s=5.0, drain_s=0.0)
    hosts = ("h1", "h2")
    for _ in range(2):  # placed on h1 and h2, then routed once up
        for h in hosts:
            beat(c, h, time.monotonic())
        await c.reconcile_once()
    routed = {b.instance_id for b in c.routes["shop"].backends}
    [on_h1] = [p.instance_id for p in store.placements("shop") if p.host_id == "h1"]
    assert on_h1 in routed

    assert store.drain_host("h1") is True
    assert store.drain_host("h1") is False  # already
    beat(c, "h3", time.monotonic(), up=False)  # a new host, its instances not up yet
    await c.reconcile_once()
    placed = {p.instance_id: p.host_id for p in store.placements("shop")}
    assert placed[on_h1] == "h1" and list(placed.values()).count("h3") == 1
    for h in ("h1", "h2"):
        beat(c, h, time.monotonic())
    beat(c, "h3", time.monotonic(), up=False)  # the replacement is starting
    await c.reconcile_once()
    assert on_h1 in {p.instance_id for p in store.placements("shop")}
    assert on_h1 in {b.instance_id for b in c.routes["shop"].backends}

    beat(c, "h3", time.monotonic())  # up: this pass routes it ...
    await c.reconcile_once()
    [on_h3] = [p.instance_id for p in store.placements("shop") if p.host_id == "h3"]
    assert on_h3 in {b.instance_id for b in c.routes["shop"].backends}
    assert on_h1 in {p.instance_id for p in store.placements("shop")}
    await c.reconcile_once()  # ... and the next drops the old one
    assert on_h1 not in {p.instance_id for p in store.placements("shop")}
    assert on_h1 not in {b.instance_id for b in c.routes["shop"].backends}
    assert all(i.instance_id != on_h1 for i in c.assignments["h1"].content)
    assert [r.note for r in store.host_drains()] == [""]

    # A scale-up while drained: nothing new lands on h1.
    store.set_formation(store.app("shop").id, {"web": 3})
    for h in ("h1", "h2", "h3"):
        beat(c, h, time.monotonic())
    await c.reconcile_once()
    assert "h1" not in {p.host_id for p in store.placements("shop")}

    assert store.undrain_host("h1") is True and store.undrain_host("h1") is False
    assert store.host_drains() == []


def beat_small(c: Controller, host: str) -> None:
    """`beat`, from a host with room for one instance of the default size."""
    beat(c, host, time.monotonic())
    hb = c.soft.hosts[host].heartbeat
    c.soft.record(msgspec.structs.replace(hb, memory_mb=300), time.monotonic())


async def test_a_drain_with_nowhere_to_go_says_so_and_another_holder_goes_on(
    store: Store,
    astore: AsyncStore,
) -> None:
    c, _ = leader(astore)
    assert c.settings.instance_memory_mb == 256
    for _ in range(2):
        for h in ("h1", "h2"):
            beat_small(c, h)
        await c.reconcile_once()
    before = {p.instance_id: p.host_id for p in store.placements("shop")}
    assert sorted(before.values()) == ["h1", "h2"]
    store.drain_host("h2")
    for h in ("h1", "h2"):
        beat_small(c, h)
    await c.reconcile_once()
    # h1 has no room for a second copy: h2's stays, and the drain says why.
    assert {p.instance_id: p.host_id for p in store.placements("shop")} == before
    note = {r.host_id: r.note for r in store.host_drains()}["h2"]
    assert note.startswith("no other host has room for shop web."), note

    # A second holder (a new fence) reads the drain from the store, and a
    # host with room ends it.
    c2, _ = leader(astore, token=2)
    for _ in range(4):
        for h in ("h1", "h2", "h3"):
            beat_small(c2, h)
        await c2.reconcile_once()
    assert c2._hostdrains.drained == {"h2"}
    assert "h2" not in {p.host_id for p in store.placements("shop")}
    assert [r.note for r in store.host_drains()] == [""]
