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
