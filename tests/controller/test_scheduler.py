from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.controller.scheduler import HostInfo, Placement, Want, place


def _ids() -> object:
    n = iter(range(1, 10**6))
    return lambda w, idx: f"{w.app}-{w.process_type}-{idx}-{next(n)}"


def test_web_spreads_over_distinct_hosts() -> None:
    hosts = [HostInfo("a", True), HostInfo("b", True), HostInfo("c", True)]
    out = place([Want("app", 1, "web", 2)], [], hosts, _ids())  # type: ignore[arg-type]
    assert len(out) == 2
    assert len({p.host_id for p in out}) == 2
    assert sorted(p.idx for p in out) == [1, 2]


def test_existing_placements_are_kept() -> None:
    hosts = [HostInfo("a", True), HostInfo("b", True)]
    first = place([Want("app", 1, "web", 2)], [], hosts, _ids())  # type: ignore[arg-type]
    again = place([Want("app", 1, "web", 2)], first, hosts, _ids())  # type: ignore[arg-type]
    assert again == first


def test_dead_host_instances_are_replaced_elsewhere() -> None:
    hosts = [HostInfo("a", True), HostInfo("b", True), HostInfo("c", True)]
    first = place([Want("app", 1, "web", 2)], [], hosts, _ids())  # type: ignore[arg-type]
    dead = first[0].host_id
    hosts2 = [HostInfo(h.host_id, h.host_id != dead) for h in hosts]
    second = place([Want("app", 1, "web", 2)], first, hosts2, _ids())  # type: ignore[arg-type]
    assert all(p.host_id != dead for p in second)
    assert first[1] in second  # the survivor did not move
    assert len({p.host_id for p in second}) == 2


def test_scale_down_drops_highest_index() -> None:
    hosts = [HostInfo("a", True)]
    three = place([Want("app", 1, "web", 3)], [], hosts, _ids())  # type: ignore[arg-type]
    one = place([Want("app", 1, "web", 1)], three, hosts, _ids())  # type: ignore[arg-type]
    assert [p.idx for p in one] == [1] and one[0] == three[0]


def test_capacity_is_respected() -> None:
    hosts = [HostInfo("a", True, memory_mb=512)]
    out = place([Want("app", 1, "web", 3, memory_mb=256)], [], hosts, _ids())  # type: ignore[arg-type]
    assert len(out) == 2


def test_unwanted_release_is_dropped() -> None:
    hosts = [HostInfo("a", True)]
    old = place([Want("app", 1, "web", 2)], [], hosts, _ids())  # type: ignore[arg-type]
    both = place([Want("app", 1, "web", 2), Want("app", 2, "web", 2)], old, hosts, _ids())  # type: ignore[arg-type]
    assert len(both) == 4
    new = place([Want("app", 2, "web", 2)], both, hosts, _ids())  # type: ignore[arg-type]
    assert {p.release for p in new} == {2} and len(new) == 2


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    alive=st.lists(st.booleans(), min_size=1, max_size=5),
)
def test_properties(counts: list[int], alive: list[bool]) -> None:
    hosts = [HostInfo(f"h{i}", a) for i, a in enumerate(alive)]
    wants = [Want(f"app{i}", 1, "web", c) for i, c in enumerate(counts)]
    out = place(wants, [], hosts, _ids())  # type: ignore[arg-type]
    live = [h.host_id for h in hosts if h.alive]
    assert all(p.host_id in live for p in out)
    for w in wants:
        mine = [p for p in out if p.app == w.app]
        assert len(mine) == (w.count if live else 0)
        # spread: no host has two copies while another live host has none
        per = Counter(p.host_id for p in mine)
        if mine:
            assert max(per.values()) - min(per.get(h, 0) for h in live) <= 1
        assert len({p.idx for p in mine}) == len(mine)
    assert len({p.instance_id for p in out}) == len(out)


def test_placement_is_stable_under_repeated_runs() -> None:
    hosts = [HostInfo(f"h{i}", True) for i in range(4)]
    wants = [Want(f"app{i}", 1, "web", 2) for i in range(10)]
    out: list[Placement] = place(wants, [], hosts, _ids())  # type: ignore[arg-type]
    for _ in range(3):
        assert place(wants, out, hosts, _ids()) == out  # type: ignore[arg-type]


def test_what_other_apps_hold_counts_as_already_placed() -> None:
    """Placing some apps alone, with the others' memory and instances per host
    passed in, decides as placing them together would."""
    hosts = [HostInfo("a", True, 1024), HostInfo("b", True, 1024), HostInfo("c", True, 1024)]
    want = [Want("new", 1, "web", 2, 256)]
    # a is nearly full with other apps' instances; b holds more of them than c.
    out = place(want, [], hosts, _ids(), reserved={"a": 900, "b": 256}, placed={"a": 3, "b": 1})  # type: ignore[arg-type]
    assert sorted(p.host_id for p in out) == ["b", "c"]
    alone = place(want, [], hosts, _ids())  # type: ignore[arg-type]
    assert sorted(p.host_id for p in alone) == ["a", "b"]
