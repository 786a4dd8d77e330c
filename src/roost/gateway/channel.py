"""One SSH session channel as the gateway's handlers see it: asyncssh's
callback interface turned into awaitable reads and writes.

asyncssh's own stream sessions would do, except that they keep the "sftp"
subsystem for an SFTP server running in this process, while the gateway
relays it, as raw bytes, to the servicehost that holds the files. So every
session (exec, shell, subsystem) gets this one class.

Flow control: input beyond INPUT_LIMIT bytes not yet read pauses reading
from the client; `drain()` waits while asyncssh's send window is full.
Window-size changes, breaks and signals arrive in order with the input, as
the exceptions asyncssh uses for them (raised by `read`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import asyncssh

INPUT_LIMIT = 1 << 20

Handler = Callable[["Channel"], Coroutine[object, object, None]]


class _Eof:
    pass


EOF = _Eof()


class Channel(asyncssh.SSHServerSession):
    def __init__(self, handler: Handler, tasks: set[asyncio.Task[None]]) -> None:
        self._handler = handler
        self._tasks = tasks
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._inbox: deque[bytes | Exception | _Eof] = deque()
        self._buffered = 0
        self._paused = False
        self._arrived = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._closed = asyncio.Event()
        self.command: str | None = None
        self.subsystem: str | None = None
        self.term: str | None = None
        self.cols, self.rows = 80, 24

    # ------------------------------------------------------------ asyncssh's side

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self.term = term_type
        self.cols, self.rows = term_size[0] or 80, term_size[1] or 24
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self.subsystem = subsystem
        return subsystem == "sftp"

    def session_started(self) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._handler(self))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if datatype is not None:
            return  # extended data from a client: nothing sends it
        self._push(data)
        self._buffered += len(data)
        if self._buffered > INPUT_LIMIT and self._chan is not None and not self._paused:
            self._chan.pause_reading()
            self._paused = True

    def eof_received(self) -> bool:
        self._push(EOF)
        return True  # keep our side open: output may still follow

    def break_received(self, msec: int) -> bool:
        self._push(asyncssh.BreakReceived(msec))
        return True

    def signal_received(self, signal: str) -> None:
        self._push(asyncssh.SignalReceived(signal))

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.cols, self.rows = width, height
        self._push(asyncssh.TerminalSizeChanged(width, height, pixwidth, pixheight))

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()
        self._can_write.set()
        self._push(EOF)

    def _push(self, item: bytes | Exception | _Eof) -> None:
        self._inbox.append(item)
        self._arrived.set()

    # ------------------------------------------------------------ the handler's side

    async def read(self, n: int = 65536) -> bytes:
        """Up to `n` bytes of input; b"" at EOF. Raises TerminalSizeChanged,
        BreakReceived and SignalReceived where they came in the stream."""
        while not self._inbox:
            self._arrived.clear()
            await self._arrived.wait()
        item = self._inbox[0]
        if isinstance(item, _Eof):
            return b""  # stays queued: every later read is EOF too
        self._inbox.popleft()
        if isinstance(item, Exception):
            raise item
        if len(item) > n:
            self._inbox.appendleft(item[n:])
            item = item[:n]
        self._buffered -= len(item)
        if self._paused and self._buffered <= INPUT_LIMIT // 2 and self._chan is not None:
            self._chan.resume_reading()
            self._paused = False
        return item

    def write(self, data: bytes, stderr: bool = False) -> None:
        if self._chan is None or self._closed.is_set():
            raise BrokenPipeError("the client has gone")
        if stderr:
            self._chan.write_stderr(data)
        else:
            self._chan.write(data)

    async def drain(self) -> None:
        await self._can_write.wait()
        if self._closed.is_set():
            raise BrokenPipeError("the client has gone")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._chan.get_extra_info(name, default) if self._chan is not None else default

    def finish(self, status: int, signal: str = "") -> None:
        """Report how the command ended and close the channel."""
        if self._chan is None or self._closed.is_set():
            return
        with contextlib.suppress(OSError, asyncssh.Error):
            if signal:
                self._chan.exit_with_signal(signal)
            else:
                self._chan.exit(status)
