"""roost.aio's pure helpers."""

from __future__ import annotations

from roost.aio import FOLLOW_FAST_S, FOLLOW_QUIET_S, FOLLOW_SLOW_S, follow_delay


def test_a_followed_log_is_polled_quickly_while_lines_come_then_slowly() -> None:
    assert follow_delay(0.0) == follow_delay(FOLLOW_QUIET_S - 0.01) == FOLLOW_FAST_S
    assert follow_delay(FOLLOW_QUIET_S) == follow_delay(600.0) == FOLLOW_SLOW_S
    assert FOLLOW_FAST_S < FOLLOW_SLOW_S
