"""roost.aio's helpers (no sockets)."""

from __future__ import annotations

import asyncio

from roost.aio import FOLLOW_FAST_S, FOLLOW_QUIET_S, FOLLOW_SLOW_S, Bell, follow_delay


def test_a_followed_log_is_polled_quickly_while_lines_come_then_slowly() -> None:
    assert follow_delay(0.0) == follow_delay(FOLLOW_QUIET_S - 0.01) == FOLLOW_FAST_S
    assert follow_delay(FOLLOW_QUIET_S) == follow_delay(600.0) == FOLLOW_SLOW_S
    assert FOLLOW_FAST_S < FOLLOW_SLOW_S


async def test_a_bell_wakes_every_waiter_each_time_it_rings() -> None:
    bell = Bell()
    assert await bell.wait(0.001) is False  # nobody rang
    waiters = [asyncio.create_task(bell.wait(3600)) for _ in range(3)]
    await asyncio.sleep(0)  # all waiting
    bell.ring()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 30) == [True, True, True]
    assert await bell.wait(0.001) is False  # it does not stay rung
