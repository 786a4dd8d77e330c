"""Steady HTTP load through a router, for the zero-downtime test and bench/deploy.py.

`Load` runs its clients on an event loop in a thread of its own, so a test
can drive the platform (deploy, scale) synchronously meanwhile. Two kinds of
client, as a site sees them: keep-alive clients that reuse one connection for
request after request, and clients that open a fresh connection for each
request. Every request that does not end in a 200 whose body is one the
caller accepts is a failure, kept with what happened (status, exception).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


def _now() -> str:
    """Wall-clock time of a failure, to set beside the daemons' logs."""
    t = time.time()
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    bodies: set[str] = field(default_factory=set)  # the distinct bodies served

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)

    def percentile(self, q: float) -> float:
        """The q-th percentile latency (nearest rank), seconds; 0 without any."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]


class Load:
    """`keep_alive` + `fresh` clients, each sending `method` `path` (with
    `body`) back to back, `pause_s` apart, until `stop()` (or `each`
    requests, when not 0)."""

    def __init__(
        self,
        port: int,
        host: str,
        path: str = "/",
        *,
        method: str = "GET",
        body: bytes = b"",
        keep_alive: int = 3,
        fresh: int = 2,
        pause_s: float = 0.0,
        each: int = 0,
        accept: Callable[[str], bool] = lambda body: True,
        timeout_s: float = 30.0,
        address: str = "127.0.0.1",  # a cluster's router is on its host's address
    ) -> None:
        self.url = f"http://{address}:{port}{path}"
        self.headers = {"Host": host}
        self.method = method
        self.body = body
        self.keep_alive = keep_alive
        self.fresh = fresh
        self.pause_s = pause_s
        self.each = each
        self.accept = accept
        self.timeout_s = timeout_s
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="load", daemon=True)
        self._thread.start()

    def stop(self) -> LoadResult:
        """Stop every client (a request in flight is let finish) and return the tally."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 10)
            assert not self._thread.is_alive(), "the load's clients did not stop"
            self._thread = None
        if self._error is not None:
            raise self._error
        return self.result

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    async def _run(self) -> None:
        timeout = httpx.Timeout(self.timeout_s)
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.keep_alive):
                tg.create_task(self._client(httpx.Limits(max_keepalive_connections=1), timeout))
            for _ in range(self.fresh):
                # No connection is kept: each request opens one of its own.
                tg.create_task(self._client(httpx.Limits(max_keepalive_connections=0), timeout))

    async def _client(self, limits: httpx.Limits, timeout: httpx.Timeout) -> None:
        r = self.result
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as c:
            sent = 0
            while not self._stop.is_set() and not (self.each and sent >= self.each):
                sent += 1
                t0 = time.perf_counter()
                try:
                    resp = await c.request(
                        self.method, self.url, headers=self.headers, content=self.body or None
                    )
                except httpx.HTTPError as exc:
                    r.failures.append(f"{_now()} {type(exc).__name__}: {exc}")
                else:
                    if resp.status_code == 200 and self.accept(resp.text):
                        r.ok += 1
                        r.latencies.append(time.perf_counter() - t0)
                        r.bodies.add(resp.text)
                    else:
                        r.failures.append(f"{_now()} {resp.status_code}: {resp.text[:200]!r}")
                if self.pause_s:
                    await asyncio.sleep(self.pause_s)
