"""A runner's exec sessions (`run APP CMD`, cron) held by shims, so they
outlive the runner.

Theory of operation. The same shim as an instance's (`roost.runner.shim`),
started in session mode: it holds the pty master (or a stdin pipe), numbers
the output and keeps it until the session's client acknowledged it, and
keeps the exit status until the session is forgotten (ExecClose, or no
client for the session's idle time). `ShimHolder` starts them for
`roost.sessions.server.ExecSessions` in DATA/runner/session-shims/<id>/
(root's, 0700), next to a record (`session.json`) of what a successor needs
to serve the session again and clean up after it: the session id, whether
it has a pty, how long it is kept without a client, and what the starting
runner chose to keep (`extra`: the run's assignment and cgroup unit).
`discover` finds the live ones after a restart (a directory whose shim is
gone is removed; a live shim without a usable record has its process
killed), each a `ShimHeld` the sessions server adopts under its old id.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import msgspec

from roost.runner import shimproto as protocol
from roost.runner.layout import safe_name
from roost.runner.shimclient import (
    Exit,
    ShimError,
    Status,
    collect,
    launch,
    live,
    read_frame,
)
from roost.sessions.held import ChunkSink, Held
from roost.sessions.server import Spawn

log = logging.getLogger("roost.runner")

RECORD_NAME = "session.json"


class SessionRecord(msgspec.Struct, kw_only=True):
    session: str
    pty: bool = False
    keep_s: float | None = None
    extra: dict[str, Any] = {}


def read_record(directory: Path) -> SessionRecord | None:
    """The record, if well-formed and naming this directory's session."""
    try:
        rec = msgspec.json.decode((directory / RECORD_NAME).read_bytes(), type=SessionRecord)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return rec if safe_name(rec.session) == directory.name else None


class ShimHeld:
    """One session's process, held by its shim (`roost.sessions.server.Held`)."""

    def __init__(
        self,
        directory: Path,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: Status,
        popen: Any = None,
    ) -> None:
        self.directory = directory
        self.pid = status.pid
        self.first_seq = status.first_seq
        self.input_offset = status.input_offset
        self._reader = reader
        self._writer = writer
        self.popen = popen  # ours to reap when we started it

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        if not self._writer.is_closing():
            self._writer.write(protocol.frame(kind, payload))

    def write(self, data: bytes, eof: bool) -> None:
        for i in range(0, len(data), protocol.MAX_FRAME):
            self._send(protocol.INPUT, data[i : i + protocol.MAX_FRAME])
        if eof:
            self._send(protocol.INPUT_EOF)

    def resize(self, rows: int, cols: int) -> None:
        self._send(protocol.WINSIZE, f"{int(rows)} {int(cols)}".encode())

    def signal(self, sig: int) -> None:
        self._send(protocol.SIGNAL, str(int(sig)).encode())

    def ack(self, seq: int) -> None:
        self._send(protocol.ACK, str(max(0, int(seq))).encode())

    async def pump(self, sink: ChunkSink) -> int | None:
        seq = self.first_seq
        try:
            while True:
                try:
                    msg = await read_frame(self._reader)
                except (asyncio.IncompleteReadError, ConnectionError, ShimError) as exc:
                    log.warning("session shim %s went away: %s", self.directory.name, exc)
                    return None
                if isinstance(msg, Exit):
                    return msg.returncode
                if isinstance(msg, tuple):
                    stream, data = msg
                    sink(seq, "stdout" if stream == "stdout" else "stderr", data)
                    seq += 1
        except asyncio.CancelledError:
            self._writer.close()  # let go: the shim keeps it for our successor
            raise

    async def forget(self) -> None:
        await collect(self.directory, self._reader, self._writer, self.popen)


class ShimHolder:
    """Starts sessions under shims in `root` (`roost.sessions.server.Holder`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def start(self, session_id: str, spawn: Spawn) -> Held:
        directory = self.root / safe_name(session_id)
        spec = {
            "argv": list(spawn.argv),
            "env": dict(spawn.env),
            "cwd": str(spawn.cwd),
            **spawn.setup,
            "session": {"pty": spawn.pty, "rows": spawn.rows, "cols": spawn.cols},
        }
        record = SessionRecord(
            session=session_id, pty=spawn.pty, keep_s=spawn.keep_s, extra=dict(spawn.record)
        )
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        popen, reader, writer, status = await launch(
            directory, spec, lambda: _write(directory, record)
        )
        return ShimHeld(directory, reader, writer, status, popen)


def _write(directory: Path, record: SessionRecord) -> None:
    fd = os.open(directory / RECORD_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.encode(record))


async def discover(root: Path) -> list[tuple[SessionRecord, ShimHeld]]:
    """The sessions a previous runner left, each with its record."""
    return [
        (record, ShimHeld(directory, reader, writer, status))
        for record, directory, reader, writer, status in await live(root, read_record, "session")
    ]
