"""What the sessions server asks of a process held elsewhere (a runner's
shim: `roost.runner.shimsession`); see `roost.sessions.server`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from roost.sessions.server import Spawn

ChunkSink = Callable[[int, Literal["stdout", "stderr"], bytes], None]  # (seq, stream, data)


class Held(Protocol):
    """A session's process held by another process (see roost.sessions.server)."""

    pid: int
    first_seq: int  # the number of the first chunk it will report
    input_offset: int  # input bytes it took already

    def write(self, data: bytes, eof: bool) -> None: ...
    def resize(self, rows: int, cols: int) -> None: ...
    def signal(self, sig: int) -> None: ...
    def ack(self, seq: int) -> None: ...

    async def pump(self, sink: ChunkSink) -> int | None:
        """Report output until the process exits; its returncode (None: lost).
        Cancelled, it lets go (the process keeps running)."""
        ...

    async def forget(self) -> None:
        """The exit status was reported: the holder may go."""
        ...


class Holder(Protocol):
    async def start(self, session_id: str, spawn: Spawn) -> Held: ...
