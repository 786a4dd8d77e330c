"""Which runners the lease holder tells of a new assignment (pure), and
what a runner makes of such a hint."""

from __future__ import annotations

from roost.controller.assign import HostAssignment
from roost.controller.nudge import targets
from roost.controller.softstate import HostSeen
from roost.runner.fencing import Held, is_newer
from roost.wire.cluster import Endpoint
from roost.wire.messages import AssignmentReady, Heartbeat


def seen(host: str, rpc: bool = True, down: bool = False) -> HostSeen:
    hb = Heartbeat(
        host_id=host,
        hostname=host,
        rpc_endpoint=f"tcp://10.0.0.1:{len(host)}" if rpc else "",
        rpc_key="k" * 40 if rpc else "",
    )
    return HostSeen(heartbeat=hb, last_seen=0.0, down_since=5.0 if down else None)


def test_only_live_runners_with_an_endpoint_and_an_assignment_are_told() -> None:
    hosts = {"a": seen("a"), "down": seen("down", down=True), "norpc": seen("norpc", rpc=False)}
    book = {h: HostAssignment(content=(), version=4) for h in ("a", "down", "norpc")}
    got = targets(["a", "down", "norpc", "unheard", "a-unassigned"], hosts, book, fence=7)
    assert got == [
        ("a", Endpoint("tcp://10.0.0.1:1", "k" * 40), AssignmentReady(fence=7, version=4))
    ]


def test_a_runner_beats_only_for_an_assignment_newer_than_it_holds() -> None:
    held = Held(fence=3, version=5)
    assert is_newer(held, 3, 6) and is_newer(held, 4, 1)
    assert not is_newer(held, 3, 5) and not is_newer(held, 3, 4) and not is_newer(held, 2, 9)
