"""Singleton process types (controller/singleton.py): one instance, and the
old one stops before the new one starts. Pure: wants, placements and
reported statuses in, what to place out."""

from __future__ import annotations

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.scheduler import Placement, Want
from roost.controller.singleton import Departures, arrange
from roost.controller.store import ReleaseRow
from roost.wire.messages import InstanceState, InstanceStatus

PROCS = {
    "web": ProcessSpec(name="web", kind="wsgi", entrypoint="a:app", web=True),
    "worker": ProcessSpec(name="worker", kind="command", command="./work"),
    "clock": ProcessSpec(name="clock", kind="command", command="./clock"),
}


def release(version: int, singletons: tuple[str, ...] = ()) -> ReleaseRow:
    spec = AppSpec(processes=PROCS, singletons=list(singletons))
    return ReleaseRow(7, version, None, "active", "sha256:aa", "", spec, "", "", 0.0, {}, [])


def wants(*versions: int, clock: int = 1) -> list[Want]:
    return [
        Want("shop", v, t, n)
        for v in versions
        for t, n in (("web", 2), ("worker", 1), ("clock", clock))
    ]


def placed(version: int, *types: str) -> list[Placement]:
    return [Placement(f"{t}-v{version}", "shop", version, t, 1, "h1") for t in types]


def status(iid: str, ptype: str, state: InstanceState, app: str = "shop") -> InstanceStatus:
    return InstanceStatus(instance_id=iid, app=app, release=1, process_type=ptype, state=state)


def releases(*rows: ReleaseRow) -> dict[tuple[int, int], ReleaseRow]:
    return {(r.app_id, r.version): r for r in rows}


def test_without_singletons_everything_is_placed_at_once() -> None:
    # A pending release's workers start beside the serving one's (start, then stop).
    v1, v2 = release(1), release(2)
    ws = wants(1, 2)
    old = placed(1, "web", "worker", "clock")
    up = {p.instance_id: status(p.instance_id, p.process_type, "up") for p in old}
    assert arrange(ws, 7, releases(v1, v2), v1, old, up) == (ws, ws)


def test_a_pending_singleton_waits_for_the_old_one_to_be_gone() -> None:
    v1, v2 = release(1, ("clock",)), release(2, ("clock",))
    ws, rows = wants(1, 2), releases(v1, v2)
    old = placed(1, "web", "worker", "clock")
    # v1's clock is still placed and up: v1's clock is no longer wanted (it
    # stops), v2's is held; both releases' web and worker run side by side.
    for state in ("up", "stopping", "starting"):
        statuses = {"clock-v1": status("clock-v1", "clock", state)}
        every, now = arrange(ws, 7, rows, v1, old, statuses)
        assert every == ws  # the rollout still counts v2's clock
        assert [(w.release, w.process_type) for w in now] == [
            (1, "web"), (1, "worker"), (2, "web"), (2, "worker"),
        ]  # fmt: skip
    # Gone (or reported with no process): v2's clock is placed.
    for statuses in ({}, {"clock-v1": status("clock-v1", "clock", "stopped")}):
        _, now = arrange(ws, 7, rows, v1, placed(1, "web", "worker"), statuses)
        assert (2, "clock") in [(w.release, w.process_type) for w in now]
        assert (1, "clock") not in [(w.release, w.process_type) for w in now]
    # Once placed it stays placed, whatever else is reported.
    mine = [*placed(1, "web", "worker"), *placed(2, "clock")]
    other = {"x": status("x", "clock", "up")}
    _, now = arrange(ws, 7, rows, v1, mine, other)
    assert (2, "clock") in [(w.release, w.process_type) for w in now]


def test_only_the_apps_own_type_holds_it_back() -> None:
    v1 = release(1, ("clock",))
    ws = wants(1)
    statuses = {
        "a": status("a", "clock", "up", app="blog"),
        "b": status("b", "worker", "up"),
    }
    assert arrange(ws, 7, releases(v1), v1, [], statuses)[1] == ws


def test_a_restarted_singleton_starts_after_the_old_one_stopped() -> None:
    # `roost restart clock` dropped the placement; the runner still stops it.
    v1 = release(1, ("clock",))
    ws = wants(1)
    rest = placed(1, "web", "worker")
    stopping = {"clock-v1": status("clock-v1", "clock", "stopping")}
    assert (1, "clock") not in [
        (w.release, w.process_type) for w in arrange(ws, 7, releases(v1), v1, rest, stopping)[1]
    ]
    assert arrange(ws, 7, releases(v1), v1, rest, {})[1] == ws


def test_a_singleton_runs_one_instance_whatever_the_formation() -> None:
    v1 = release(1, ("clock",))
    every, now = arrange(wants(1, clock=3), 7, releases(v1), v1, [], {})
    assert [w.count for w in every if w.process_type == "clock"] == [1]
    assert [w.count for w in now if w.process_type == "clock"] == [1]


def test_the_new_release_decides_what_is_a_singleton() -> None:
    # v2 marks clock a singleton (v1 did not): v1's clock stops first.
    v1, v2 = release(1), release(2, ("clock",))
    statuses = {"clock-v1": status("clock-v1", "clock", "up")}
    _, now = arrange(wants(1, 2), 7, releases(v1, v2), v1, placed(1, "clock"), statuses)
    assert [(w.release, w.process_type) for w in now if w.process_type == "clock"] == []
    # v2 no longer marks it (v1 did): the two start side by side, as workers do.
    v1, v2 = release(1, ("clock",)), release(2)
    _, now = arrange(wants(1, 2), 7, releases(v1, v2), v1, placed(1, "clock"), statuses)
    assert [(w.release, w.process_type) for w in now if w.process_type == "clock"] == [
        (1, "clock"),
        (2, "clock"),
    ]


def test_a_first_release_has_nothing_to_wait_for() -> None:
    v1 = release(1, ("clock",))
    assert arrange(wants(1), 7, releases(v1), None, [], {})[1] == wants(1)


def test_a_dropped_singleton_departs_until_its_host_took_the_assignment_without_it() -> None:
    v1 = release(1, ("clock",))
    book = Departures()
    old = placed(1, "web", "clock")
    book.dropped("shop", 7, releases(v1), old, {"web-v1"}, fence=3)  # the clock went
    acks: dict[str, tuple[int, int] | None] = {"h1": (3, 4)}
    # Not yet published: whatever the host said before, it departs.
    assert book.waiting("shop", acks.get) == {"clock"}
    book.published({"h1": 5}.__getitem__)
    assert book.waiting("shop", acks.get) == {"clock"}
    acks["h1"] = (3, 5)  # the host's heartbeat took version 5
    assert book.waiting("shop", acks.get) == set()
    assert book.waiting("shop", lambda h: None) == set()  # and it is forgotten


def test_a_departing_instance_on_a_host_gone_or_under_a_newer_holder_is_gone() -> None:
    v1 = release(1, ("clock",))
    acks: list[tuple[int, int] | None] = [None, (4, 1)]
    for ack in acks:  # down; converging to a newer lease holder's assignment
        book = Departures()
        book.dropped("shop", 7, releases(v1), placed(1, "clock"), set(), fence=3)
        book.published(lambda h: 9)
        assert book.waiting("shop", {"h1": ack}.get) == set()
    # Workers and other apps' types never depart: they need no waiting.
    book = Departures()
    book.dropped("shop", 7, releases(v1), placed(1, "worker", "web"), set(), fence=3)
    assert book.waiting("shop", lambda h: (3, 0)) == set()
