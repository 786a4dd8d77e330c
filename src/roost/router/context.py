"""What every connection of one router worker shares: the current route table,
the balancer's slots, limits, the access log, static bundles, and the owner of
background tasks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost.router.balance import Balancer
from roost.router.scan import bytes_of
from roost.router.stats import RequestStats
from roost.router.table import AppEntry, RouteTable, changed_entries, empty_table
from roost.settings import Settings

if TYPE_CHECKING:
    from roost.router.accesslog import AccessLog
    from roost.router.client import ClientConnection

try:
    import cython
except ImportError:  # (Cython is a build tool: the router runs as plain Python without it)
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

if cython.compiled:  # (C functions for `monotonic`; compiled code only)
    from cython.cimports.posix.time import CLOCK_MONOTONIC, clock_gettime, timespec


def monotonic() -> float:
    """Seconds on CLOCK_MONOTONIC, the clock both event loops keep time by
    (asyncio's is time.monotonic; uvloop's loop.time() is it in whole
    milliseconds): when a request starts and ends. Compiled, one
    clock_gettime, where loop.time() was a Python call that made a float
    (the two reads a request were ~3.7% of its user time, measured)."""
    if cython.compiled:
        ts = cython.declare(timespec)
        clock_gettime(CLOCK_MONOTONIC, cython.address(ts))
        return ts.tv_sec + ts.tv_nsec * 1e-9
    else:  # (an else, not a fall-through: Cython warns of unreachable code)
        return time.monotonic()


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 5.0
    first_byte_timeout: float = 60.0
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 200
    max_body_bytes: int = 100 * 1024 * 1024
    upstream_idle: float = 1.0
    max_attempts: int = 3
    # Request bytes kept to replay a retry; larger bodies are never retried after sending.
    replay_bytes: int = 64 * 1024
    # Request bytes buffered while no instance connection is ready yet.
    buffer_bytes: int = 256 * 1024

    @staticmethod
    def from_settings(s: Settings) -> Limits:
        return Limits(
            connect_timeout=s.router_connect_timeout_s,
            first_byte_timeout=s.router_first_byte_timeout_s,
            idle_timeout=s.router_idle_timeout_s,
            header_timeout=s.router_header_timeout_s,
            max_header_bytes=s.router_max_header_bytes,
            max_body_bytes=s.router_max_body_bytes,
            upstream_idle=s.router_upstream_idle_s,
        )


Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class Context:
    """Compiled with the request path (context.pxd): the limits the hot path
    reads per request are copied into typed fields (`Limits` is frozen)."""

    __slots__ = (
        "access",
        "balancer",
        "buffer_bytes",
        "bundles",
        "clients",
        "clock",
        "counts",
        "draining",
        "first_byte_timeout",
        "header_timeout",
        "host_cache",
        "host_id",
        "idle_timeout",
        "limits",
        "loop",
        "max_attempts",
        "max_body_bytes",
        "max_header_bytes",
        "max_headers",
        "now",
        "replay_bytes",
        "rid_buf",
        "rid_prefix",
        "spawn",
        "stats",
        "table",
        "table_gen",
    )

    def __init__(
        self,
        *,
        limits: Limits,
        spawn: Spawn,
        access: AccessLog | None = None,
        balancer: Balancer | None = None,
        default_domain: str = "localhost",
        host_id: str = "",
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.clock = (
            self.loop.time
        )  # (a retry's failure time; a request's start and end: monotonic)
        # A coarse clock for deadlines, advanced by every sweep: setting a
        # deadline then costs an attribute read instead of a clock call.
        self.now = self.loop.time()
        self.limits = limits
        self.header_timeout = limits.header_timeout
        self.idle_timeout = limits.idle_timeout
        self.first_byte_timeout = limits.first_byte_timeout
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.max_body_bytes = limits.max_body_bytes
        self.max_attempts = limits.max_attempts
        self.replay_bytes = limits.replay_bytes
        self.buffer_bytes = limits.buffer_bytes
        self.spawn = spawn
        self.access = access
        self.stats = RequestStats()
        self.counts = self.stats.counts  # (what a request updates: typed, compiled)
        self.balancer = balancer or Balancer()
        self.table: RouteTable = empty_table(default_domain)
        # The table's Host cache, typed here so a request probes it with one C
        # call (the table is a plain Python object).
        self.host_cache = self.table.cache
        # Counts table swaps: a connection's remembered Host (client.py) is
        # good while this has not moved.
        self.table_gen = 0
        self.host_id = host_id
        # digest -> unpacked static bundle directory, filled by the bundle fetcher.
        self.bundles: dict[str, Path] = {}
        self.clients: set[ClientConnection] = set()
        # Ending (drain.py): every request answered from now on closes its connection.
        self.draining = False
        self.rid_prefix = os.urandom(4).hex().encode()
        # The last request id made, as text ("PREFIX-N", N in hex from 1):
        # counted up in place, so making the next is a copy, not a format.
        self.rid_buf = bytearray(self.rid_prefix + b"-0")

    def request_id(self) -> bytes:
        """PREFIX-N for the next N (what b"%s-%x" % (prefix, n) writes)."""
        buf = self.rid_buf
        i = len(buf) - 1
        while True:
            c = buf[i]
            if c == 57:  # "9" -> "a"
                buf[i] = 97
                break
            if c != 102:  # not "f": one up, no carry
                buf[i] = c + 1
                break
            buf[i] = 48  # "f" -> "0", carry
            i -= 1
            if buf[i] == 45:  # "-": every digit carried, the number grows one
                buf.insert(i + 1, 49)
                break
        return bytes_of(buf)

    def swap_table(self, table: RouteTable) -> tuple[list[AppEntry], list[AppEntry]]:
        """Install a new table; requests in flight keep the entries they hold.

        Returns the entries that left and came, for the certificate and bundle
        keepers."""
        old = self.table
        self.table = table
        self.host_cache = table.cache
        self.table_gen += 1
        gone, came = changed_entries(old, table)
        for slot in self.balancer.retire_unused(gone, came):
            idle, slot.idle = slot.idle, []
            for up in idle:
                up.close()
        return gone, came

    def sweep(self, now: float) -> None:
        """Enforce deadlines and drop expired pooled connections (called periodically)."""
        self.now = now
        for client in list(self.clients):
            client.check(now)
        horizon = now - self.limits.upstream_idle
        for slot in self.balancer.slots.values():
            idle = slot.idle
            if idle and idle[0].idle_since < horizon:
                keep = [up for up in idle if up.idle_since >= horizon]
                for up in idle:
                    if up.idle_since < horizon:
                        up.close()
                slot.idle = keep
