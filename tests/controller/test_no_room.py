"""A deploy no host has room for fails, saying why (issue 21's density finding).

The scheduler places by reservation: at the default 256 MB a 24 GB host
takes 47 two-instance apps, and the 48th deploy used to wait "starting"
until its rollout timed out, with nothing saying why. `scheduler.no_room`
names the wants `place` left short for want of room, `rollout.decide`
fails such a release at once, and the reconcile pass wires them together.
"""

from __future__ import annotations

import time

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller import rollout
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.scheduler import HostInfo, Placement, Want, new_instance_id, no_room, place
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.leases import Lease
from roost.wire.messages import Heartbeat, InstanceStatus

WEB = Want("shop", 1, "web", 2, memory_mb=256)
WEB_KEY = ("shop", 1, "web")


def test_a_want_left_short_for_want_of_room_is_named_with_why() -> None:
    hosts = [HostInfo("h1", True, 400), HostInfo("h2", True, 300)]
    # Others hold 200 MB on h1: one instance fits on h2 only.
    placed = place([WEB], [], hosts, new_instance_id, reserved={"h1": 200})
    assert [p.host_id for p in placed] == ["h2"]
    why = no_room([WEB], placed, hosts, reserved={"h1": 200})
    assert why == {
        WEB_KEY: "no host has room for 1 more web instance(s) of 256 MB each: "
        "the most free memory on any of the 2 live host(s) is 200 MB"
    }


def test_a_want_placed_whole_or_short_for_another_reason_is_not_named() -> None:
    hosts = [HostInfo("h1", True, 1024), HostInfo("h2", True, 1024)]
    placed = place([WEB], [], hosts, new_instance_id)
    assert len(placed) == 2 and no_room([WEB], placed, hosts) == {}
    # Short, but a host has room: not placed yet (or held back), not full.
    assert no_room([WEB], placed[:1], hosts) == {}
    # A host of unknown size is unlimited.
    assert no_room([WEB], [], [HostInfo("h1", True, 0), HostInfo("h2", True, 100)]) == {}


def test_with_no_live_host_nothing_is_named_a_host_is_waited_for() -> None:
    assert no_room([WEB], [], []) == {}
    assert no_room([WEB], [], [HostInfo("h1", False, 100)]) == {}


def test_placements_of_other_wants_in_the_call_take_room() -> None:
    other = Want("blog", 3, "web", 1, memory_mb=256)
    hosts = [HostInfo("h1", True, 512)]
    held = [Placement("b", "blog", 3, "web", 1, "h1"), Placement("s", "shop", 1, "web", 1, "h1")]
    why = no_room([WEB, other], held, hosts)
    assert list(why) == [WEB_KEY]
    assert "1 more web instance(s)" in why[WEB_KEY] and "is 0 MB" in why[WEB_KEY]


def test_a_release_with_no_room_fails_at_once_with_the_reason() -> None:
    placed = [("i1", "web", 1)]
    d = rollout.decide(placed, 2, {}, started_at=0.0, now=1.0, timeout_s=180.0, no_room="full")
    assert d == rollout.Decision("fail", "full")
    # Without a reason it waits, as before, until its timeout.
    assert rollout.decide(placed, 2, {}, 0.0, 1.0, 180.0).verdict == "wait"
    # Every instance placed: the reason is stale, nothing fails.
    both = [("i1", "web", 1), ("i2", "web", 2)]
    assert rollout.decide(both, 2, {}, 0.0, 1.0, 180.0, "full").verdict == "wait"


SPEC = AppSpec(
    processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
)


async def test_a_deploy_no_host_has_room_for_fails_saying_so(store: Store) -> None:
    app = store.create_app("shop", store.create_account("o@example.com"))
    store.set_formation(app.id, {"web": 2})
    astore = AsyncStore(store)
    try:
        c = Controller(astore, Settings(host_grace_s=5.0, instance_memory_mb=256), "test")
        c._lease_result(Lease("scheduler", c.holder_id, 1, 0.0), time.monotonic(), 60.0)
        c.leader_since = time.monotonic() - 100  # settled

        def beat() -> None:
            for host in ("h1", "h2"):  # 300 MB each: one 256 MB instance fits on each
                asg = c.assignments.get(host)
                up = [
                    InstanceStatus(instance_id=i.instance_id, app="shop", release=i.release,
                                   process_type="web", state="up", port=6000)
                    for i in (asg.content if asg else ())
                ]  # fmt: skip
                c.soft.record(
                    Heartbeat(host_id=host, hostname=host, addresses=["127.0.0.1"],
                              instances=up, memory_mb=300, fence=c.fence,
                              version=asg.version if asg else 0),
                    time.monotonic(),
                )  # fmt: skip

        # The first release fits, one instance a host, and goes live.
        v1 = store.create_release(app.id, "b1", "sha256:one", "", SPEC, "", "first")
        for _ in range(3):
            beat()
            await c.reconcile_once()
        assert store.release(app.id, v1).status == "active"
        # The second cannot start beside it: no host has 256 MB more. It
        # fails at the next pass, not at its timeout, and says why; v1 serves on.
        v2 = store.create_release(app.id, "b2", "sha256:two", "", SPEC, "", "second")
        beat()
        await c.reconcile_once()
        assert store.release(app.id, v2).status == "failed"
        assert store.app("shop").current_release == v1
        said = [e.message for e in store.events({app.id}) if e.kind == "deploy-failed"]
        assert said == [
            "shop v2: no host has room for 2 more web instance(s) of 256 MB each: "
            "the most free memory on any of the 2 live host(s) is 44 MB"
        ]
    finally:
        astore.close()
