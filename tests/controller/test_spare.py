"""The automatic spare (controller/spare.py): which lost servicehost to
replace by which spare, and when, as data with a fake clock."""

from __future__ import annotations

from roost.controller.spare import Due, SpareWatch, spares, survey_every
from tests.controller.replacekit import ADDRESSES, P1, P2, reports

AFTER = 600.0


def look(w: SpareWatch, now: float, *answering: str, **serving: list[str]) -> list[Due]:
    return w.look(now, reports(*answering, serving=serving), ADDRESSES, [P1, P2])


def test_a_paired_host_silent_past_the_threshold_is_replaced_by_the_spare_once() -> None:
    w = SpareWatch(AFTER)
    assert look(w, 0, "sh1", "sh2", "sh3", "sh4", "sh5") == []
    assert look(w, 10, "sh1", "sh3", "sh4", "sh5") == []  # sh2 silent from 10
    assert look(w, 609, "sh1", "sh3", "sh4", "sh5") == []
    assert look(w, 610, "sh1", "sh3", "sh4", "sh5") == [Due("sh2", "sh5", 600.0)]
    # Named once: still silent, still in the pair (the flow failed), not again.
    assert look(w, 700, "sh1", "sh3", "sh4", "sh5") == []
    assert look(w, 5000, "sh1", "sh3", "sh4", "sh5") == []


def test_a_host_back_before_the_threshold_is_left_alone_and_counted_anew() -> None:
    w = SpareWatch(AFTER)
    assert look(w, 0, "sh1", "sh3", "sh4", "sh5") == []  # sh2 silent from 0
    assert look(w, 599, "sh1", "sh3", "sh4", "sh5") == []
    assert look(w, 600, "sh1", "sh2", "sh3", "sh4", "sh5") == []  # back: left alone
    assert look(w, 601, "sh1", "sh3", "sh4", "sh5") == []  # silent again, from 601
    assert look(w, 1200, "sh1", "sh3", "sh4", "sh5") == []
    assert look(w, 1201, "sh1", "sh3", "sh4", "sh5") == [Due("sh2", "sh5", 600.0)]


def test_a_host_named_then_back_then_lost_again_is_named_again() -> None:
    w = SpareWatch(AFTER)
    look(w, 0, "sh1", "sh3", "sh4", "sh5")
    assert look(w, 600, "sh1", "sh3", "sh4", "sh5") == [Due("sh2", "sh5", 600.0)]
    look(w, 650, "sh1", "sh2", "sh3", "sh4", "sh5")  # the replacement did not happen; back
    look(w, 700, "sh1", "sh3", "sh4", "sh5")
    assert look(w, 1300, "sh1", "sh3", "sh4", "sh5") == [Due("sh2", "sh5", 600.0)]


def test_no_spare_no_partner_or_a_spare_holding_services_means_no_replacement() -> None:
    w = SpareWatch(AFTER)
    look(w, 0, "sh1", "sh3", "sh4")
    assert look(w, 1000, "sh1", "sh3", "sh4") == [], "no spare answers"
    # The spare answers, but holds an app's service: not a spare.
    assert look(w, 1001, "sh1", "sh3", "sh4", "sh5", sh5=["blog"]) == []
    # Both of a pair silent: no copy to make a standby from.
    w = SpareWatch(AFTER)
    look(w, 0, "sh3", "sh4", "sh5")
    assert look(w, 1000, "sh3", "sh4", "sh5") == []
    # Its partner back: the one still silent (since 0) is due at once.
    assert look(w, 1001, "sh2", "sh3", "sh4", "sh5") == [Due("sh1", "sh5", 1001.0)]


def test_two_lost_hosts_of_two_pairs_take_one_spare_each() -> None:
    w = SpareWatch(AFTER)
    look(w, 0, "sh1", "sh3", "sh5", "sh6")
    assert w.look(
        601,
        reports("sh1", "sh3", "sh5", "sh6"),
        ADDRESSES | {"sh6": "10.0.0.6"},
        [
            P1,
            P2,
        ],
    ) == [Due("sh2", "sh5", 601.0), Due("sh4", "sh6", 601.0)]


def test_one_spare_for_two_lost_hosts_goes_to_the_first_and_the_other_waits() -> None:
    w = SpareWatch(AFTER)
    look(w, 0, "sh1", "sh3", "sh5")
    assert look(w, 600, "sh1", "sh3", "sh5") == [Due("sh2", "sh5", 600.0)]
    # Once sh5 is in p1 (replaced), no spare is left for sh4.
    after = [P1.__class__("p1", ("sh1", "sh5"), ("10.0.0.1", "10.0.0.5"), 5434, 8009, 6001), P2]
    assert w.look(700, reports("sh1", "sh3", "sh5"), ADDRESSES, after) == []


def test_a_threshold_of_zero_never_replaces() -> None:
    w = SpareWatch(0)
    look(w, 0, "sh1", "sh3", "sh4", "sh5")
    assert look(w, 10**6, "sh1", "sh3", "sh4", "sh5") == []


def test_spares_and_how_often_to_survey() -> None:
    assert spares(reports("sh1", "sh5", "sh6", serving={"sh6": ["blog"]}), [P1, P2]) == ["sh5"]
    assert survey_every(600) == 15.0 and survey_every(20) == 5.0 and survey_every(2) == 1.0
