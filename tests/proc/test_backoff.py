"""The one backoff (roost.proc.backoff): pure, with the random draw given."""

from __future__ import annotations

from roost.proc.backoff import Backoff, Retry


def test_doubles_from_the_base_up_to_the_cap() -> None:
    b = Backoff(base_s=0.5, max_s=10.0)
    assert [b.delay(n) for n in range(0, 8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.delay(10_000) == 10.0  # no overflow however long it fails


def test_jitter_spreads_within_the_band_and_never_past_the_cap() -> None:
    b = Backoff(base_s=1.0, max_s=8.0, jitter=0.2)
    assert b.delay(2, rand=0.0) == 1.6
    assert b.delay(2, rand=0.5) == 2.0
    assert abs(b.delay(2, rand=0.999999) - 2.4) < 1e-5
    assert b.delay(9, rand=0.999999) == 8.0  # the cap holds with jitter too
    assert b.delay(9, rand=0.0) == 6.4


def test_a_long_run_forgives_earlier_failures() -> None:
    b = Backoff(reset_after_s=30.0)
    assert b.failures_after(5, ran_s=29.9) == 6
    assert b.failures_after(5, ran_s=30.0) == 1
    assert b.failures_after(0, ran_s=0.0) == 1


def test_retry_counts_failures_and_starts_over_on_success() -> None:
    draws = iter([0.0, 1.0 - 1e-9, 0.5])
    r = Retry(Backoff(base_s=1.0, max_s=60.0, jitter=0.5), rand=lambda: next(draws))
    assert r.failed() == 0.5  # 1 s, low end of the band
    assert abs(r.failed() - 3.0) < 1e-6  # 2 s, high end
    assert r.next_delay == 4.0
    r.succeeded()
    assert r.failures == 0 and r.failed() == 1.0
