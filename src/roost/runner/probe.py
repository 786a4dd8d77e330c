"""Readiness of a web instance: its health check (`health.py`) over HTTP.

The decisions (did a try pass, when to try again, what the failure says) are
`health.judge`'s; this module only knocks (`knock`: one GET on the instance's
TCP port) and sleeps, both passed in to `run_check` so it runs under a fake
clock in tests. The caller owns the overall startup deadline and cancels the
check when it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from roost import aio
from roost.runner.health import Answer, Check, Progress, judge, watch

# While nothing listens yet, knock again after an eighth of the time waited
# so far (10 ms at least, a second at most): an instance is seen listening
# at most ~12% after it began to, where a doubling backoff (50 ms, 100, 200,
# ...) saw one that listened at 0.16 s only at 0.35 s, a fifth of a
# code-only push's time to live. A refused connect on the host is cheap,
# and a slow app is knocked at less and less often (~30 knocks in its first
# second, then one a second).
REFUSED_MIN_S = 0.01
REFUSED_MAX_S = 1.0
REFUSED_FRACTION = 0.125


def refused_delay(waited_s: float) -> float:
    """How long to wait after a refused knock, `waited_s` into the start."""
    return min(REFUSED_MAX_S, max(REFUSED_MIN_S, waited_s * REFUSED_FRACTION))


# Enough of a body to find a check's `content` in.
BODY_LIMIT = 64 * 1024

Knock = Callable[[Check], Awaitable[Answer]]
Sleep = Callable[[float], Awaitable[None]]


def request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: roost-runner-probe\r\n\r\n"
    ).encode()


def status_of(line: bytes) -> int:
    """The status of an HTTP status line; 0 when it is not one."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return 0
    return int(parts[1])


async def knock(host: str, port: int, check: Check) -> Answer:
    """One GET of the check's path on `host:port`."""
    t = check.timeout_s
    try:
        reader, writer = await aio.wait_for(asyncio.open_connection(host, port), t)
    except TimeoutError:
        return Answer(error=f"did not accept a connection within {t:g}s")
    except OSError as exc:
        return Answer(error=f"refused the connection ({exc.strerror or exc})", refused=True)
    try:
        writer.write(request(check.path))
        await writer.drain()
        # gunicorn accepts into its backlog before a worker has booted: waiting
        # here (rather than retrying) catches the first moment a worker answers.
        line = await aio.wait_for(reader.readline(), t)
        status = status_of(line)
        if not status:
            what = "closed the connection" if not line else "answered something not HTTP"
            return Answer(error=f"{what} without a status")
        body = b""
        if check.content:
            body = await aio.wait_for(reader.read(BODY_LIMIT), t)
            while len(body) < BODY_LIMIT and (more := await aio.wait_for(reader.read(4096), t)):
                body += more
        return Answer(status=status, body=body)
    except TimeoutError:
        return Answer(error=f"did not answer within {t:g}s")
    except OSError as exc:
        return Answer(error=f"broke the connection ({exc.strerror or exc})")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_check(check: Check, knock: Knock, sleep: Sleep) -> str:
    """Try `check` until it passes ("") or fails (its message)."""
    if check.initial_delay_s:
        await sleep(check.initial_delay_s)
    progress = Progress()
    waited = 0.0  # since the first knock, by the sleeps between knocks
    while True:
        v = judge(check, progress, await knock(check), refused_delay(waited))
        if v.kind == "pass":
            return ""
        if v.kind == "fail":
            return v.message
        progress = v.progress
        await sleep(v.delay_s)
        waited += v.delay_s


async def keep_checking(check: Check, knock: Knock, sleep: Sleep, every_s: float) -> str:
    """Try a running instance's check every `every_s` until it fails (its
    message); `health.watch` decides."""
    progress = Progress()
    delay = every_s
    while True:
        await sleep(delay)
        v = watch(check, progress, await knock(check), every_s)
        if v.kind == "fail":
            return v.message
        progress, delay = v.progress, v.delay_s
