"""SIGUSR2 as a hand-over for the servicehost's daemons (`roost servicehost`,
`roost sentinel`): it stops the daemon like SIGTERM does, but the body is
told to leave its servers running for the next daemon to adopt."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


async def serving(
    stop: asyncio.Event, body: Callable[[Callable[[], bool]], Awaitable[None]]
) -> None:
    """Run `body(handing_over)` with SIGUSR2 setting `stop` and making
    `handing_over()` true from then on."""
    handing_over = False

    def hand_over() -> None:
        nonlocal handing_over
        handing_over = True
        stop.set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR2, hand_over)
    try:
        await body(lambda: handing_over)
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
