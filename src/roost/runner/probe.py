"""Readiness of a web instance: it accepts a TCP connection AND answers HTTP.

Any status counts (a Django app with ALLOWED_HOSTS answers 400 to the probe's
Host and is still up); what matters is that a worker is serving. The caller
owns the overall startup deadline and cancels the wait when it passes.
"""

from __future__ import annotations

import asyncio
import contextlib

from roost import aio
from roost.proc.backoff import Backoff, Retry

# Knock again after 50 ms, doubling to once a second: a quick app is seen up
# at once, a slow one is not hammered.
PROBE_BACKOFF = Backoff(base_s=0.05, max_s=1.0)

REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: roost-runner-probe\r\n\r\n"


async def answers_http(host: str, port: int, timeout: float) -> bool:
    try:
        reader, writer = await aio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(REQUEST)
        await writer.drain()
        # gunicorn accepts into its backlog before a worker has booted: waiting
        # here (rather than retrying) catches the first moment a worker answers.
        head = await aio.wait_for(reader.readexactly(5), timeout)
        return head == b"HTTP/"
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_until_answers(host: str, port: int, attempt_timeout: float = 30.0) -> None:
    """Return once `host:port` answers an HTTP request; retries until cancelled."""
    retry = Retry(PROBE_BACKOFF)
    while not await answers_http(host, port, attempt_timeout):
        await asyncio.sleep(retry.failed())
