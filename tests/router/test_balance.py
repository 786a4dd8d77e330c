"""Instance choice and passive health: pure, with a fake clock."""

from __future__ import annotations

from roost.router.balance import Balancer, Slot, pick, record_failure, record_success
from roost.router.table import build_table, changed_entries
from roost.wire.messages import AppRoute, Backend, RouteDelta


def slots(n: int) -> list[Slot]:
    return [Slot(Backend(instance_id=f"i{k}", host="127.0.0.1", port=1000 + k)) for k in range(n)]


def test_round_robin_when_idle() -> None:
    s = slots(3)
    chosen = [pick(s, start, now=0.0) for start in range(6)]
    assert [c.backend.instance_id for c in chosen if c] == ["i0", "i1", "i2", "i0", "i1", "i2"]


def test_least_outstanding_wins() -> None:
    s = slots(3)
    s[0].outstanding = 2
    s[1].outstanding = 1
    s[2].outstanding = 3
    assert pick(s, 0, now=0.0) is s[1]
    assert pick(s, 0, now=0.0, exclude=[s[1]]) is s[0]


def test_ejection_and_recovery_with_a_fake_clock() -> None:
    s = slots(2)
    assert record_failure(s[0], now=100.0, max_fails=2, eject_s=10.0) is False
    assert pick(s, 0, now=100.0) is s[0]  # one failure is not enough with max_fails=2
    assert record_failure(s[0], now=101.0, max_fails=2, eject_s=10.0) is True
    assert all(pick(s, k, now=105.0) is s[1] for k in range(4))
    assert pick(s, 0, now=111.5) is s[0]  # ejection over
    record_success(s[0])
    assert s[0].fails == 0 and s[0].ejected_until == 0.0


def test_all_ejected_still_tries_the_one_back_soonest() -> None:
    s = slots(2)
    record_failure(s[0], now=0.0, max_fails=1, eject_s=10.0)
    record_failure(s[1], now=1.0, max_fails=1, eject_s=10.0)
    assert pick(s, 1, now=2.0) is s[0]
    assert pick(s, 0, now=2.0, exclude=[s[0], s[1]]) is None


def test_slots_survive_table_changes_and_retire_when_gone() -> None:
    b = Balancer(max_fails=1, eject_s=5.0)
    a1 = Backend(instance_id="a1", host="127.0.0.1", port=1)
    a2 = Backend(instance_id="a2", host="127.0.0.1", port=2)
    t1 = build_table(1, 0, [AppRoute(app="a", hostnames=[], backends=[a1, a2])], "d")
    first = b.slots_for(t1.apps["a"])
    first[0].outstanding = 4
    from roost.router.table import apply_delta

    _, t2 = apply_delta(
        t1,
        RouteDelta(
            base_version=1, version=2, upserts=[AppRoute(app="a", hostnames=[], backends=[a1])]
        ),
    )
    gone = b.retire_unused(*changed_entries(t1, t2))
    assert [s.backend.instance_id for s in gone] == ["a2"] and gone[0].retired
    again = b.slots_for(t2.apps["a"])
    assert again[0] is first[0] and again[0].outstanding == 4  # same live state


def test_choose_rotates_per_app() -> None:
    b = Balancer()
    bs = [Backend(instance_id=f"i{k}", host="h", port=k) for k in range(2)]
    t = build_table(1, 0, [AppRoute(app="a", hostnames=[], backends=bs)], "d")
    e = t.apps["a"]
    got = [b.choose(e, 0.0).backend.instance_id for _ in range(4)]  # type: ignore[union-attr]
    assert got == ["i0", "i1", "i0", "i1"]
