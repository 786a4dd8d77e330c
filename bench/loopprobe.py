"""Where a benchmarked process's event loop was held: loop lag and GC pauses.

A round trip measured from outside (a simulated runner's heartbeat) says
that something waited, not what. `Probe` runs inside the process under test
and writes down, with wall-clock times so they line up with the round trips:

  hold  the loop ran nothing else for at least HOLD_MS (a ticker that asks
        to be woken every TICK_S was woken that much late): one callback,
        or one step of a coroutine, held it, or the process waited for a
        CPU. The loop thread's CPU time over the hold tells them apart: on
        a machine busy with other work a hold of 500 ms may have used 20 ms
        of CPU, and the process was waiting its turn, not its loop. The
        ticker wakes behind whatever was queued before it: a hold may be
        two steps of one coroutine back to back (a heartbeat, read as
        soon as its socket is ready, waits for one);
  gc    a garbage collection of at least GC_MS (generation, objects freed,
        CPU ms), which holds whatever step is running when it sets off.

Rows go to a file as "kind wall_start ms detail" lines, every half second.
`summary` reads them back: a bench prints the longest of each kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICK_S = 0.005
HOLD_MS = 50.0
GC_MS = 20.0
FLUSH_S = 0.5


class Probe:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[str] = []
        self._gc_started = 0.0
        self._gc_cpu = 0.0
        self._task: asyncio.Task[None] | None = None

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            self._gc_cpu = time.thread_time()
            return
        ms = 1000 * (time.perf_counter() - self._gc_started)
        if ms >= GC_MS:
            began = time.time() - ms / 1000
            cpu = 1000 * (time.thread_time() - self._gc_cpu)
            what = f"gen{info['generation']}:{info['collected']}"
            self.rows.append(f"gc {began:.3f} {ms:.1f} {cpu:.1f} {what}")

    async def _tick(self) -> None:
        flushed = time.monotonic()
        while True:
            asked, cpu = time.monotonic(), time.thread_time()
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            late = 1000 * (now - asked - TICK_S)
            if late >= HOLD_MS:
                cpu = 1000 * (time.thread_time() - cpu)
                self.rows.append(f"hold {time.time() - late / 1000:.3f} {late:.1f} {cpu:.1f} -")
            if now - flushed >= FLUSH_S:
                flushed = now
                self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        if rows:
            with self.path.open("a") as fh:
                fh.writelines(r + "\n" for r in rows)

    def start(self) -> None:
        gc.callbacks.append(self._gc)
        self._task = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc)
        if self._task is not None:
            self._task.cancel()
        self.flush()


def probed(
    main: Callable[[], Awaitable[None]], path: Path
) -> Callable[[], Coroutine[Any, Any, None]]:
    """`main` with a Probe writing to `path` while it runs."""

    async def run() -> None:
        probe = Probe(path)
        probe.start()
        try:
            await main()
        finally:
            probe.stop()

    return run


@dataclass(frozen=True)
class Row:
    kind: str
    at: float  # wall clock, when it began
    ms: float
    cpu_ms: float  # the loop thread's CPU time meanwhile
    detail: str


def read(path: Path) -> list[Row]:
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        kind, at, ms, cpu, detail = line.split(" ", 4)
        rows.append(Row(kind, float(at), float(ms), float(cpu), detail))
    return rows


def summary(rows: list[Row], since: float, until: float) -> str:
    """Between two wall times (printed relative to `since`): how many holds
    and GC pauses, and the three that used the most CPU (the process's own
    work, whatever else the machine was doing)."""
    out = []
    for kind, what in (("hold", "loop held"), ("gc", "GC pauses")):
        got = sorted(
            (r for r in rows if r.kind == kind and since <= r.at < until),
            key=lambda r: -r.cpu_ms,
        )
        if not got:
            out.append(f"{what}: none")
            continue
        top = ", ".join(
            f"{r.cpu_ms:.0f} ms CPU ({r.ms:.0f} ms wall) at +{r.at - since:.1f}s"
            + (f" {r.detail}" if r.detail != "-" else "")
            for r in got[:3]
        )
        out.append(
            f"{what} >= {HOLD_MS if kind == 'hold' else GC_MS:.0f} ms: {len(got)}, most CPU {top}"
        )
    return "; ".join(out)
