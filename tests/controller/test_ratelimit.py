"""The login limits as pure data, driven by a fake clock."""

from __future__ import annotations

import pytest

from roost.controller.ratelimit import LoginGuard, SlidingWindow, TooMany


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_admits_limit_then_says_when() -> None:
    clock = FakeClock()
    w = SlidingWindow(3, 60.0, clock)
    for _ in range(3):
        assert w.retry_after("k") == 0.0
        w.record("k")
        clock.now += 10
    # events at 1000, 1010, 1020; now 1030: the first leaves at 1060
    assert w.retry_after("k") == pytest.approx(30.0)
    assert w.retry_after("other") == 0.0
    clock.now = 1060.0
    assert w.retry_after("k") == 0.0
    w.record("k")
    assert w.retry_after("k") == pytest.approx(10.0)  # 1010 leaves at 1070


def test_window_forgets_idle_keys_and_stays_bounded() -> None:
    clock = FakeClock()
    w = SlidingWindow(2, 60.0, clock, max_keys=100)
    for i in range(1000):
        w.record(f"addr{i}")
        clock.now += 0.01
    assert len(w) <= 100
    # the newest keys are the ones kept
    w.record("addr999")
    assert w.retry_after("addr999") > 0
    clock.now += 61
    assert w.retry_after("addr999") == 0.0
    assert len(w) <= 100


def test_reset_clears_a_key() -> None:
    w = SlidingWindow(1, 60.0, FakeClock())
    w.record("k")
    assert w.retry_after("k") > 0
    w.reset("k")
    assert w.retry_after("k") == 0.0


def test_guard_per_address_and_per_account() -> None:
    clock = FakeClock()
    g = LoginGuard(per_address=10, tries_per_account=5, clock=clock)
    for _ in range(5):
        g.admit_login("10.0.0.1", "Victim@Example.com ")
    # the sixth try on the account, from anywhere, in any letter case
    with pytest.raises(TooMany) as exc:
        g.admit_login("10.9.9.9", "victim@example.com")
    assert "account" in str(exc.value)
    assert exc.value.retry_after == pytest.approx(15 * 60)
    assert exc.value.retry_after_header == "900"
    # other accounts from the same address until the address's 10 a minute
    for i in range(5):
        g.admit_login("10.0.0.1", f"user{i}@example.com")
    with pytest.raises(TooMany) as exc:
        g.admit_login("10.0.0.1", "fresh@example.com")
    assert "address" in str(exc.value)
    clock.now += 60
    g.admit_login("10.0.0.1", "fresh@example.com")


def test_a_success_clears_the_accounts_count() -> None:
    g = LoginGuard(clock=FakeClock())
    for _ in range(4):
        g.admit_login("10.0.0.1", "me@example.com")
    g.succeeded("me@example.com")
    for _ in range(5):
        g.admit_login("10.0.0.2", "me@example.com")
    with pytest.raises(TooMany):
        g.admit_login("10.0.0.3", "me@example.com")


def test_a_refused_try_costs_nothing() -> None:
    """Refusals are not recorded: waiting out the window is enough."""
    clock = FakeClock()
    g = LoginGuard(per_address=2, clock=clock)
    g.admit_login("a", "x@example.com")
    g.admit_login("a", "y@example.com")
    for _ in range(50):
        with pytest.raises(TooMany):
            g.admit_login("a", "z@example.com")
    clock.now += 60
    g.admit_login("a", "z@example.com")


def test_token_issues_are_limited_per_account() -> None:
    clock = FakeClock()
    g = LoginGuard(per_address=100, tokens_per_account=3, clock=clock)
    for _ in range(3):
        g.admit_token("10.0.0.1", 7)
    with pytest.raises(TooMany):
        g.admit_token("10.0.0.2", 7)
    g.admit_token("10.0.0.2", 8)
