"""Soft state: hosts up and down, what counts as a change, and when a replica knows enough."""

from __future__ import annotations

from roost.controller.softstate import SoftState
from roost.wire.messages import Heartbeat, InstanceState, InstanceStatus


def _hb(host: str, state: InstanceState = "up", memory: float = 10.0) -> Heartbeat:
    return Heartbeat(
        host_id=host,
        hostname=host,
        addresses=["10.0.0.1"],
        instances=[
            InstanceStatus(
                instance_id="i1", app="a", release=1, process_type="web", state=state,
                port=5000, memory_mb=memory,
            )
        ],
    )  # fmt: skip


def test_generation_moves_on_relevant_changes_only() -> None:
    soft = SoftState(grace_s=5.0)
    assert soft.record(_hb("h1"), 0.0) is True  # new host
    g = soft.generation
    assert soft.record(_hb("h1", memory=99.0), 1.0) is False  # memory: not relevant
    assert soft.generation == g
    soft.record(_hb("h1", state="crashed"), 2.0)
    assert soft.generation == g + 1
    assert soft.mark_down(20.0) == ["h1"] and not soft.alive("h1")
    assert soft.generation == g + 2
    assert soft.statuses() == {}  # a down host's instances are unknown
    assert soft.record(_hb("h1"), 21.0) is True and soft.alive("h1")  # back up
    assert soft.generation == g + 3


def test_informed_after_a_grace_period_of_unbroken_heartbeats() -> None:
    soft = SoftState(grace_s=4.0)
    assert not soft.informed(0.0)
    for n in range(5):
        soft.record(_hb("h1"), float(n))
    assert soft.informed(4.0)
    assert not soft.informed(6.5)  # silence longer than half a grace period
    soft.record(_hb("h1"), 10.0)  # heard again: the clock starts over
    assert not soft.informed(10.0)
    for t in (11.0, 12.0, 13.0, 14.0):
        soft.record(_hb("h1"), t)
    assert soft.informed(14.0)


def test_changes_name_the_instances_and_hosts_that_moved() -> None:
    soft = SoftState(grace_s=5.0)
    soft.record(_hb("h1"), 0.0)
    assert soft.take_changes() == ({"i1"}, {"h1"})  # a new host and what it runs
    soft.record(_hb("h1", memory=99.0), 1.0)
    assert soft.take_changes() == (set(), set())  # memory use moves nothing
    soft.record(_hb("h1", state="crashed"), 2.0)
    assert soft.take_changes() == ({"i1"}, set())
    assert soft.statuses()["i1"].state == "crashed" and list(soft.statuses()) == ["i1"]
    # The instance now reported by another host (and no longer by h1).
    moved = Heartbeat(host_id="h2", hostname="h2", instances=_hb("h1").instances)
    soft.record(moved, 3.0)
    soft.record(Heartbeat(host_id="h1", hostname="h1", addresses=["10.0.0.1"]), 3.0)
    assert soft.take_changes() == ({"i1"}, {"h2"})
    assert soft.statuses()["i1"].state == "up" and soft.reporter == {"i1": "h2"}
    soft.record(moved, 10.0)
    assert soft.mark_down(10.0) == ["h1"]
    assert soft.take_changes() == (set(), {"h1"}) and "i1" in soft.statuses()
    assert soft.mark_down(20.0) == ["h2"]
    assert soft.take_changes() == ({"i1"}, {"h2"}) and "i1" not in soft.statuses()
