"""asyncio helpers shared by every daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """`asyncio.wait_for` built on `asyncio.timeout`.

    On Python 3.11 `asyncio.wait_for` can swallow a cancellation that arrives
    just as the awaited thing completes (fixed in 3.12, where wait_for is this
    code): a daemon's task then misses its TaskGroup's cancellation and
    shutdown hangs. Same contract otherwise: TimeoutError, inner cancelled.
    """
    async with asyncio.timeout(timeout):
        return await aw


# Following a deploy's log by polling (the gateway for `git push`, the API's
# build stream for `roost deploy`): quickly while lines are coming, since a
# code-only deploy ends about half a second after its last quiet stretch
# begins and each poll's wait is added to what a user waits; slowly once
# the log has been quiet a while (a long build, a slow release command).
FOLLOW_FAST_S = 0.05
FOLLOW_SLOW_S = 0.25
FOLLOW_QUIET_S = 2.0


def follow_delay(quiet_s: float) -> float:
    """How long to wait before the next poll, the log quiet for `quiet_s`. Pure."""
    return FOLLOW_FAST_S if quiet_s < FOLLOW_QUIET_S else FOLLOW_SLOW_S


class Bell:
    """Wakes every waiter each time it rings: an Event that resets itself.

    For followers of what is written to the state database (a deploy's end):
    a waiter reads again when it rings, and after its timeout anyway, since a
    write by another process rings nothing here.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True when it rang within `timeout` seconds."""
        event = self._event
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True
