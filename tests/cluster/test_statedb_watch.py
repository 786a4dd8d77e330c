"""The failover test's judge of the lease's history (`statedb.overlaps`), as
data: what it must call a lease held twice, and what it must not."""

from __future__ import annotations

from tests.cluster.statedb import LeaseSample, overlaps

TTL = 5.0


def _s(holder: str, token: int, expires_at: float) -> LeaseSample:
    return LeaseSample(holder, token, expires_at)


def test_renewals_then_a_takeover_after_expiry_are_fine() -> None:
    history = [
        _s("a", 1, 105.0),
        _s("a", 1, 107.0),
        _s("a", 1, 109.0),  # a dies here
        _s("b", 2, 114.5),  # granted at 109.5, after 109.0
        _s("b", 2, 116.0),
    ]
    assert overlaps(history, TTL) == []


def test_a_lease_given_up_may_be_taken_at_once() -> None:
    history = [_s("a", 1, 105.0), _s("a", 1, 0.0), _s("b", 2, 106.0)]
    assert overlaps(history, TTL) == []


def test_a_grant_before_the_last_expiry_is_held_twice() -> None:
    history = [_s("a", 1, 105.0), _s("a", 1, 109.0), _s("b", 2, 112.0)]  # granted at 107
    assert ["before the earlier holder's lease ran out" in p for p in overlaps(history, TTL)] == [
        True
    ]


def test_a_token_handed_out_again_is_held_twice() -> None:
    # A grant lost in a failover: b's token 2 vanished, c got 2 as well.
    history = [_s("a", 1, 105.0), _s("b", 2, 111.0), _s("c", 2, 118.0)]
    assert any("held by b and c" in p for p in overlaps(history, TTL))


def test_a_token_or_an_expiry_going_back_is_a_lost_write() -> None:
    assert any("went back from 3 to 2" in p for p in overlaps([_s("a", 3, 10), _s("a", 2, 9)], TTL))
    lost_renewal = [_s("a", 1, 109.0), _s("a", 1, 107.0)]
    assert any("expiry went back" in p for p in overlaps(lost_renewal, TTL))
