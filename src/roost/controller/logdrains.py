"""Log drains: each controller sends the lines it receives.

Theory of operation: an app's instance and platform lines reach a
controller replica (a runner's LogBatch goes to one replica; the
controller's own lines are written where they happen) and are written to
the built-in store through `AsyncStore.append_logs`, which hands them to
`LogDrains.offer` once written. Each replica thus sends exactly the lines
it received, with no second read of the database: no replica is a
bottleneck, no line waits for a lease holder, and none is sent twice by
two replicas. (Tailing the log table instead would read every line back,
and on PostgreSQL an id sequence commits out of order, so a tail by id
skips lines.) A replica that dies loses what it had queued, as any drain
that is best effort does.

`offer` runs on the event loop and never waits: it frames the lines of
apps that have drains (logdrain_frame) into each drain's bounded queue
(logdrain_queue), which drops the oldest past its bounds and counts them.
A task per drain sends batches (logdrain_send) with a timeout, backing
off while the receiver fails, so a slow or dead drain holds up only its
own task. The drains are read from the database every REFRESH_S (and at
once after this replica adds or removes one); each replica writes its
counters every STATUS_S, and `roost drains list` adds them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from roost.controller.logdrain_frame import frames_each
from roost.controller.logdrain_queue import DrainCounts, DrainQueue
from roost.controller.logdrain_send import DrainError, Sender, sender_for
from roost.controller.logdrain_url import BadDrainUrl, parse_drain_url
from roost.controller.store_drains import LogDrainRow
from roost.proc.exits import ConfigError
from roost.wire.messages import LogLine

log = logging.getLogger("roost.controller")

REFRESH_S = 5.0
STATUS_S = 5.0
BATCH_LINES = 500
BATCH_BYTES = 1 << 20
# Heroku's drains carry app, router and platform lines; a deploy's build
# output stays in its deploy's log.
SOURCES = frozenset({"app", "router", "platform"})


class DrainsStore(Protocol):
    def log_drains(self, app_id: int | None = None) -> Awaitable[list[LogDrainRow]]: ...

    def note_drain_status(self, holder: str, counts: dict[int, DrainCounts]) -> Awaitable[None]: ...


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """The system's trusted roots, and `ca_file`'s certificates too when given."""
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=str(Path(ca_file)))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ROOST_LOG_DRAIN_CA {ca_file}: {exc}") from None
    return ctx


@dataclass
class _Drain:
    row: LogDrainRow
    sender: Sender
    queue: DrainQueue = field(default_factory=DrainQueue)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class LogDrains:
    def __init__(
        self,
        store: DrainsStore,
        holder: str,
        tls: ssl.SSLContext | None = None,
        *,
        make_queue: Callable[[], DrainQueue] = DrainQueue,
        clock: Callable[[], float] = time.monotonic,
        allow_private: bool = False,
    ) -> None:
        # False: only public addresses are connected to (logdrain_url).
        self.allow_private = allow_private
        self.store = store
        self.holder = holder
        self.tls = tls if tls is not None else tls_context()
        self.make_queue = make_queue
        self.clock = clock
        self._drains: dict[int, _Drain] = {}
        self._by_app: dict[str, list[_Drain]] = {}
        self._refresh_now = asyncio.Event()
        self._noted: dict[int, DrainCounts] = {}

    # ------------------------------------------------------------ the loop's side

    def offer(self, lines: Sequence[LogLine]) -> None:
        """Queue `lines` for their apps' drains (never waits)."""
        if not self._by_app:
            return
        per_app: dict[str, list[LogLine]] = {}
        for ln in lines:
            if ln.source in SOURCES and ln.app in self._by_app:
                per_app.setdefault(ln.app, []).append(ln)
        for app, mine in per_app.items():
            ds = self._by_app[app]
            for d, framed in zip(ds, frames_each(mine, [d.row.token for d in ds]), strict=True):
                d.queue.offer(framed)
                d.wake.set()

    def rows(self) -> list[LogDrainRow]:
        """The drains this replica sends to (as it last read them)."""
        return [d.row for d in self._drains.values()]

    def apps(self) -> list[str]:
        """The apps that have drains (as this replica last read them)."""
        return sorted(self._by_app)

    def refresh_soon(self) -> None:
        """Read the drains again now (one was added or removed)."""
        self._refresh_now.set()

    def counts(self) -> dict[int, DrainCounts]:
        return {i: d.queue.counts() for i, d in self._drains.items()}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            try:
                while True:
                    try:
                        self._apply(await self.store.log_drains(), tg)
                        await self._note_status()
                    except Exception:
                        log.exception("log drains: reading or noting drains failed")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(REFRESH_S, STATUS_S)):
                            await self._refresh_now.wait()
                    self._refresh_now.clear()
            finally:
                for d in self._drains.values():
                    if d.task is not None:
                        d.task.cancel()

    def _apply(self, rows: list[LogDrainRow], tg: asyncio.TaskGroup) -> None:
        want = {r.id: r for r in rows}
        # A drain removed, or its id given to a new one (SQLite hands the
        # highest id out again), goes; the new one starts afresh.
        for drain_id in [i for i, d in self._drains.items() if want.get(i) != d.row]:
            gone = self._drains.pop(drain_id)
            self._noted.pop(drain_id, None)
            if gone.task is not None:
                gone.task.cancel()  # its sender is closed by _pump
        for drain_id, row in want.items():
            if drain_id in self._drains:
                continue
            try:
                target = parse_drain_url(row.url)
            except BadDrainUrl as exc:  # refused when added; only an edited row gets here
                log.warning("log drain %d of %s: %s", drain_id, row.app, exc)
                continue
            sender = sender_for(target, row.token, self.tls, self.allow_private)
            d = _Drain(row, sender, self.make_queue())
            d.task = tg.create_task(self._pump(d))
            self._drains[drain_id] = d
        by_app: dict[str, list[_Drain]] = {}
        for d in self._drains.values():
            by_app.setdefault(d.row.app, []).append(d)
        self._by_app = by_app

    async def _note_status(self) -> None:
        counts = self.counts()
        changed = {i: k for i, k in counts.items() if self._noted.get(i) != k}
        if changed:
            await self.store.note_drain_status(self.holder, changed)
            self._noted.update(changed)

    async def _pump(self, d: _Drain) -> None:
        q = d.queue
        try:
            while True:
                wait = q.wait_s(self.clock())
                if wait is None:
                    await d.wake.wait()
                    d.wake.clear()
                    continue
                if wait > 0:
                    await asyncio.sleep(wait)
                batch = q.take(self.clock(), BATCH_LINES, BATCH_BYTES)
                if not batch:
                    continue
                try:
                    await d.sender.send(batch)
                except Exception as exc:
                    if not isinstance(exc, DrainError):  # a bug: it must not stop the others
                        log.exception("log drain %d of %s", d.row.id, d.row.app)
                    delay = q.failed(batch, str(exc), self.clock(), time.time())
                    if q.failures == 1:  # once per outage, not once per try
                        log.warning(
                            "log drain %d of %s failing: %s (next try in %.1fs)",
                            d.row.id, d.row.app, exc, delay,
                        )  # fmt: skip
                else:
                    q.sent(batch, self.clock(), time.time())
        finally:
            await d.sender.aclose()
