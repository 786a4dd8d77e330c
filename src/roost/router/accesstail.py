"""Access lines of apps with log drains, sent to a controller for the drains.

Theory of operation: the request path stays as it is. The workers append
their access lines to one file (accesslog.py, flushed every sweep); the
router's worker 0 tails that file every PERIOD_S, off the request path,
keeps the lines of apps that have log drains and sends them to one
controller as a RouterLogBatch, which hands them to those drains (not to
the built-in store: `roost logs` shows instance and platform lines, and
the router's file keeps every access line). The controller's answer names
the apps that have drains, so a router learns the set as it sends, and an
empty batch goes out when there is nothing to send.

Bounded everywhere: at most MAX_READ bytes are read per period (a router
far behind skips to the end of the file, counting what it skipped), lines
that do not reach a controller are dropped and counted, and a rotated file
is read to its end before the new one is opened.

Which app a line belongs to is read from its ` app=NAME inst=ID ms=MS rid=`
fields, which the router writes itself. The client's values (host, agent,
request id) may hold spaces but no quotes; a line in which that pattern
appears more than once (a client imitating it) goes to no drain rather
than perhaps to the wrong one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from roost.router.logrotate import moved
from roost.wire.messages import DrainedApps, LogLine, Msg, RouterLogBatch

log = logging.getLogger("roost.router")

PERIOD_S = 1.0
MAX_READ = 4 << 20
MAX_LINE = 16 * 1024
SEND_TIMEOUT_S = 2.0
_FIELDS = re.compile(rb" app=([^\s]+) inst=([^\s]+) ms=(\d+(?:\.\d+)?) rid=")


class Sender(Protocol):
    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg: ...


def app_of(line: bytes) -> str | None:
    """The app an access line is about; None for none, or when ambiguous."""
    found = _FIELDS.findall(line)
    if len(found) != 1 or found[0][0] == b"-":
        return None
    return found[0][0].decode("latin-1")


def pick(data: bytes, apps: Iterable[str], now: float) -> tuple[list[LogLine], bytes]:
    """The lines in `data` of `apps`, and the unterminated rest."""
    wanted = set(apps)
    lines, _, rest = data.rpartition(b"\n")
    if not lines and not _:
        return [], rest
    # This runs on the worker's event loop, over every line it served: only
    # lines that name a wanted app are parsed (a regex per line cost the
    # router about 7% of its CPU at full load with no drain at all).
    markers = [b" app=%s inst=" % app.encode("latin-1") for app in wanted]
    markers = [m for m in markers if m in lines]
    if not markers:
        return [], rest
    out = []
    for raw in lines.split(b"\n"):
        if not raw or not any(m in raw for m in markers):
            continue
        app = app_of(raw)
        if app is not None and app in wanted:
            text = raw[:MAX_LINE].decode("utf-8", "replace")
            out.append(LogLine(app=app, ts=now, source="router", process="router", line=text))
    return out, rest


class AccessTail:
    def __init__(self, path: Path, controllers: Sender, period: float = PERIOD_S) -> None:
        self.path = path
        self.controllers = controllers
        self.period = period
        self.apps: list[str] = []
        self.sent = 0
        self.dropped = 0
        self.skipped_bytes = 0
        self._fd: int | None = None
        self._rest = b""

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.period)
                # (passing over the file is a few metadata calls, as the access
                # log's own flush makes on the loop: no thread, and no GIL
                # handed to one and back every period)
                data = await asyncio.to_thread(self._read) if self.apps else self._next()
                lines, self._rest = pick(self._rest + data, self.apps, time.time())
                if len(self._rest) > MAX_LINE:
                    self._rest = b""  # no line is that long: not one of ours
                await self._send(lines)
        finally:
            if self._fd is not None:
                os.close(self._fd)

    async def _send(self, lines: list[LogLine]) -> None:
        try:
            reply = await self.controllers.call(
                RouterLogBatch(lines=lines), timeout=SEND_TIMEOUT_S, tries=1
            )
        except Exception as exc:  # no controller answered: drains are best effort
            self.dropped += len(lines)
            log.debug("access lines for drains not taken: %s", exc)
            return
        self.sent += len(lines)
        if isinstance(reply, DrainedApps):
            self.apps = reply.apps

    def _next(self) -> bytes:
        """What to pick from this period: what was appended, or, while no app
        has a drain, nothing, the file passed over to its end. Read, a busy
        router's second of lines (up to MAX_READ) was copied twice more on
        the event loop (joined to the rest, split at the last newline), a
        hold of 0.3-2 ms a second that every request in flight waited
        behind, for lines `pick` then dropped whole."""
        if self.apps:
            return self._read()
        self._rest = b""
        if self._fd is None or moved(self._fd, self.path):
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            with contextlib.suppress(FileNotFoundError):
                self._fd = os.open(self.path, os.O_RDONLY)
        if self._fd is not None:
            os.lseek(self._fd, 0, os.SEEK_END)
        return b""

    def _read(self) -> bytes:
        """What was appended since the last read (at most MAX_READ)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return b""
            os.lseek(self._fd, 0, os.SEEK_END)  # lines from before this worker are not ours
            return b""
        got = self._chunk(self._fd)
        if not got and moved(self._fd, self.path):
            # Rotated and read to its end: go on with the new file from its start.
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(FileNotFoundError):
                self._fd = os.open(self.path, os.O_RDONLY)
                got = self._chunk(self._fd)
        return got

    def _chunk(self, fd: int) -> bytes:
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        end = os.fstat(fd).st_size
        if end < pos:  # truncated in place
            os.lseek(fd, 0, os.SEEK_SET)
            pos = 0
        if end - pos > MAX_READ:
            # Far behind (a flood): skip to the newest MAX_READ, counted.
            self.skipped_bytes += end - pos - MAX_READ
            os.lseek(fd, end - MAX_READ, os.SEEK_SET)
            self._rest = b""
        return os.read(fd, MAX_READ)
