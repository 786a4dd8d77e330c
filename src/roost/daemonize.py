"""What every daemon's `run()` shares: logging, the event loop, stop signals.

Signals only set an event (gunicorn's arbiter style); the daemon's main task
notices it and shuts its own pieces down in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable


def setup_logging(role: str) -> None:
    level = os.environ.get("ROOST_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    # zmq.auth logs every handshake at DEBUG; keep our own refusals at WARNING.
    logging.getLogger("zmq.auth").setLevel(logging.WARNING)


def run_daemon(role: str, main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` on uvloop (when installed) until it returns."""
    setup_logging(role)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(runner())
    except ImportError:
        asyncio.run(runner())
