"""Which assignments the runner accepts: fences and versions, pure."""

from __future__ import annotations

from roost.runner.fencing import Held, Verdict, judge, pick
from roost.wire.messages import Assignment


def asg(fence: int, version: int, host: str = "h1") -> Assignment:
    return Assignment(host_id=host, fence=fence, version=version)


def test_first_assignment_is_accepted() -> None:
    assert judge(Held(), "h1", asg(1, 1)) is Verdict.ACCEPT
    assert judge(Held(), "h1", asg(0, 0)) is Verdict.ACCEPT


def test_lower_fence_is_refused_whatever_its_version() -> None:
    held = Held(5, 2)
    assert judge(held, "h1", asg(4, 99)) is Verdict.STALE_FENCE


def test_within_a_fence_older_versions_are_ignored_and_repeats_are_same() -> None:
    held = Held(5, 7)
    assert judge(held, "h1", asg(5, 6)) is Verdict.OLD_VERSION
    assert judge(held, "h1", asg(5, 7)) is Verdict.SAME
    assert judge(held, "h1", asg(5, 8)) is Verdict.ACCEPT


def test_higher_fence_wins_even_with_a_lower_version() -> None:
    assert judge(Held(5, 70), "h1", asg(6, 1)) is Verdict.ACCEPT


def test_assignment_for_another_host_is_refused() -> None:
    assert judge(Held(), "h1", asg(9, 9, host="h2")) is Verdict.WRONG_HOST


def test_pick_takes_the_newest_of_several_replies() -> None:
    held, accepted, rejected = pick(Held(5, 1), "h1", [asg(6, 3), asg(4, 10), asg(6, 2)])
    assert held == Held(6, 3)
    assert accepted == asg(6, 3)
    assert rejected == [(asg(4, 10), Verdict.STALE_FENCE)]


def test_pick_with_nothing_new_keeps_what_is_held() -> None:
    held, accepted, rejected = pick(Held(5, 3), "h1", [asg(5, 3), asg(5, 2)])
    assert (held, accepted) == (Held(5, 3), None)
    assert rejected == [(asg(5, 2), Verdict.OLD_VERSION)]
