"""One SSH channel relayed to an exec session on a runner or a servicehost.

Theory of operation: three tasks share the channel. `_input` reads what the
client sends and forwards it in order (each ExecInput carries its offset, so
a retried request is never applied twice), turning window-size changes,
breaks and signals into ExecResize/ExecSignal. `_output` long-polls
(ExecPoll waits up to a second on the far side) and writes each chunk to the
channel's stdout or stderr before acknowledging it with the next poll, so
output appears as it is produced and a slow client slows the process rather
than filling memory. `_closed` notices the client going away. Whichever
ends the session (the process exits, or the client leaves) the far side gets
an ExecClose, which stops the process if it is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncssh

from roost.gateway.channel import Channel
from roost.wire.messages import (
    ExecClose,
    ExecInput,
    ExecOutput,
    ExecPoll,
    ExecResize,
    ExecSignal,
    Msg,
)
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.gateway")

READ_SIZE = 256 * 1024
POLL_WAIT_S = 1.0
CALL_TIMEOUT_S = 10.0
CALL_TRIES = 3


class SessionLost(Exception):
    """The far side no longer knows the session (it was restarted, or gave up)."""


class ExecRelay:
    def __init__(self, client: RpcClient, session: str, channel: Channel) -> None:
        self.client = client
        self.session = session
        self.channel = channel
        self.pty = channel.term is not None

    async def _call(self, msg: Msg) -> Msg:
        try:
            return await self.client.call(msg, timeout=CALL_TIMEOUT_S, tries=CALL_TRIES)
        except RemoteError as exc:
            raise SessionLost(str(exc)) from None

    async def run(self) -> tuple[int, str]:
        """Relay until the process exits or the client leaves: (status, signal)."""
        result: tuple[int, str] = (255, "")
        try:
            async with asyncio.TaskGroup() as tg:
                inputs = tg.create_task(self._input())
                closed = tg.create_task(self._closed())
                out = tg.create_task(self._output())
                done, _ = await asyncio.wait({out, closed}, return_when=asyncio.FIRST_COMPLETED)
                for t in (inputs, closed, out):
                    if t not in done:
                        t.cancel()
                if out in done and not out.cancelled():
                    result = out.result()
        except* (SessionLost, RpcTimeout) as group:
            exc = group.exceptions[0]
            log.warning("session %s lost: %s", self.session, exc)
            with contextlib.suppress(Exception):
                self.channel.write(f"roost: the session was lost: {exc}\r\n".encode(), True)
        finally:
            with contextlib.suppress(RpcTimeout, RemoteError):
                await self.client.call(ExecClose(session=self.session), timeout=5.0, tries=2)
        return result

    async def _closed(self) -> None:
        await self.channel.wait_closed()

    async def _input(self) -> None:
        offset = 0
        while True:
            try:
                data = await self.channel.read(READ_SIZE)
            except asyncssh.TerminalSizeChanged as change:
                await self._call(
                    ExecResize(session=self.session, rows=change.height, cols=change.width)
                )
                continue
            except asyncssh.BreakReceived:
                await self._call(ExecSignal(session=self.session, signal="INT"))
                continue
            except asyncssh.SignalReceived as sig:
                await self._call(ExecSignal(session=self.session, signal=sig.signal))
                continue
            if not data:
                if not self.pty:  # a pty has no EOF: the client's leaving ends it
                    await self._call(ExecInput(session=self.session, offset=offset, eof=True))
                return
            await self._call(ExecInput(session=self.session, offset=offset, data=data))
            offset += len(data)

    async def _output(self) -> tuple[int, str]:
        after = 0
        while True:
            reply = await self._call(
                ExecPoll(session=self.session, after=after, wait_s=POLL_WAIT_S)
            )
            if not isinstance(reply, ExecOutput):
                raise SessionLost(f"unexpected reply {type(reply).__name__}")
            for chunk in reply.chunks:
                if chunk.seq <= after:
                    continue  # a resent reply
                try:
                    self.channel.write(chunk.data, stderr=chunk.stream == "stderr")
                    await self.channel.drain()
                except BrokenPipeError:
                    return 255, ""  # the client left: the session is closed below
                after = chunk.seq
            if reply.exit_status is not None:
                return reply.exit_status, reply.exit_signal
