"""Ship instance and platform log lines to the controllers in batches.

Lines collect in a bounded `LogBuffer`; a batch goes out every `period` or as
soon as `batch_lines` are waiting, to one controller replica (the RpcClient
rotates and retries across replicas). While no controller answers, the buffer
keeps the newest lines and counts what it dropped; sending backs off so a dead
cluster costs little.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Protocol

from roost.proc.backoff import Backoff
from roost.runner.logbuffer import LogBuffer
from roost.wire.messages import LogBatch, LogLine, Msg
from roost.wire.rpc import RemoteError, RpcTimeout

log = logging.getLogger("roost.runner")


class Sender(Protocol):
    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg: ...


class LogShipper:
    def __init__(
        self,
        client: Sender,
        buffer: LogBuffer,
        *,
        batch_lines: int = 200,
        period: float = 0.2,
        timeout: float = 1.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.client = client
        self.buffer = buffer
        self.batch_lines = batch_lines
        self.period = period
        self.timeout = timeout
        # Many runners lost the controllers together: jitter spreads their retries.
        self.backoff = Backoff(base_s=0.5, max_s=max_backoff, jitter=0.2)
        self.failures = 0
        self._ready = asyncio.Event()

    def emit(self, line: LogLine) -> None:
        """Queue one line (never blocks; the oldest line goes when full)."""
        self.buffer.push(line)
        if len(self.buffer) >= self.batch_lines:
            self._ready.set()

    async def run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
            # cancellation that arrives as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period):
                    await self._ready.wait()
            self._ready.clear()
            if not await self.flush():
                await asyncio.sleep(self.backoff.delay(self.failures, random.random()))

    async def flush(self, tries: int | None = None) -> bool:
        """Send everything buffered; False when the controllers did not answer."""
        while len(self.buffer) or self.buffer.dropped:
            batch = self.buffer.take(self.batch_lines)
            try:
                await self.client.call(LogBatch(lines=batch), timeout=self.timeout, tries=tries)
            except (RpcTimeout, asyncio.CancelledError) as exc:
                self.buffer.requeue(batch)
                if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                    raise
                # (A CancelledError nobody asked for: the client dropped the
                # request when it reset its socket. Treat it as a timeout.)
                self.failures += 1
                return False
            except RemoteError as exc:
                # Refused, not lost: resending the same batch would fail again.
                log.warning("controller refused %d log lines: %s", len(batch), exc)
            self.failures = 0
        return True


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
