"""Placement after failures: spread restored when a host returns, nothing else moves."""

from __future__ import annotations

from collections import Counter
from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.controller.scheduler import HostInfo, Placement, Want, place


def _ids() -> object:
    n = count(1)
    return lambda w, idx: f"{w.app}-{w.process_type}-{idx}-n{next(n)}"


def _p(iid: str, idx: int, host: str, app: str = "app") -> Placement:
    return Placement(iid, app, 1, "web", idx, host)


WEB2 = [Want("app", 1, "web", 2)]


def test_copies_crowded_on_one_host_spread_when_another_returns() -> None:
    # b died, its copy went to a; b is back: one copy moves, same index.
    current = [_p("w1", 1, "a"), _p("w2", 2, "a")]
    hosts = [HostInfo("a", True), HostInfo("b", True)]
    out = place(WEB2, current, hosts, _ids())  # type: ignore[arg-type]
    assert out[0] == current[0]  # web.1 stays where it runs
    assert out[1].idx == 2 and out[1].host_id == "b" and out[1].instance_id != "w2"
    # Stable: placing again moves nothing (no churn).
    assert place(WEB2, out, hosts, _ids()) == out  # type: ignore[arg-type]


def test_no_move_while_only_one_host_is_alive_or_has_room() -> None:
    current = [_p("w1", 1, "a"), _p("w2", 2, "a")]
    alone = [HostInfo("a", True), HostInfo("b", False)]
    assert place(WEB2, current, alone, _ids()) == current  # type: ignore[arg-type]
    full = [HostInfo("a", True), HostInfo("b", True, memory_mb=100)]
    assert place(WEB2, current, full, _ids()) == current  # type: ignore[arg-type]


def test_single_copy_types_never_move() -> None:
    want = [Want("app", 1, "worker", 1)]
    current = [Placement("k1", "app", 1, "worker", 1, "a")]
    hosts = [HostInfo("a", True), HostInfo("b", True), HostInfo("c", True)]
    assert place(want, current, hosts, _ids()) == current  # type: ignore[arg-type]


def test_replacement_of_a_dead_hosts_copy_keeps_its_index() -> None:
    current = [_p("w1", 1, "a"), _p("w2", 2, "b")]
    hosts = [HostInfo("a", False), HostInfo("b", True), HostInfo("c", True)]
    out = place(WEB2, current, hosts, _ids())  # type: ignore[arg-type]
    assert [(p.idx, p.host_id) for p in out] == [(1, "c"), (2, "b")]
    assert out[1] == current[1]


@settings(max_examples=80, deadline=None)
@given(
    n_hosts=st.integers(1, 5),
    alive=st.lists(st.booleans(), min_size=5, max_size=5),
    spots=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), max_size=12),
    want=st.lists(st.integers(0, 4), min_size=4, max_size=4),
)
def test_spread_and_minimal_moves(
    n_hosts: int, alive: list[bool], spots: list[tuple[int, int]], want: list[int]
) -> None:
    hosts = [HostInfo(f"h{i}", alive[i]) for i in range(n_hosts)]
    live = {h.host_id for h in hosts if h.alive}
    current: list[Placement] = []
    used: set[tuple[int, int]] = set()
    for app, host in spots:  # existing placements, indexes 1.. per app
        if host >= n_hosts:
            continue
        idx = sum(1 for a, _ in used if a == app) + 1
        used.add((app, idx))
        current.append(Placement(f"a{app}-{idx}", f"a{app}", 1, "web", idx, f"h{host}"))
    wants = [Want(f"a{i}", 1, "web", c) for i, c in enumerate(want)]
    out = place(wants, current, hosts, _ids())  # type: ignore[arg-type]
    assert all(p.host_id in live for p in out)
    for w in wants:
        mine = [p for p in out if p.app == w.app]
        assert len(mine) == (w.count if live else 0)
        # One copy per index; a running copy is kept even if a lower index
        # died with its host and is not needed any more (scale-down).
        assert len({p.idx for p in mine}) == len(mine)
        if len(mine) >= 2:  # at least two hosts whenever two exist
            assert len({p.host_id for p in mine}) >= min(2, len(live))
        # Moves: of the copies that could stay (live host, index within count),
        # at most one was moved, and only to restore the spread.
        could_stay = [
            p for p in current if p.app == w.app and p.host_id in live and p.idx <= w.count
        ]
        moved = [p for p in could_stay if p not in out]
        assert len(moved) <= 1
        if moved:
            assert Counter(p.host_id for p in could_stay).most_common(1)[0][1] == len(could_stay)
