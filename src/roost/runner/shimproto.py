"""The shim's protocol and its pure parts (`roost.runner.shim` runs them).

Standard library only, like the shim: it is imported by path when the shim
runs as a script (`python -I -S shim.py`), and as `roost.runner.shimproto`
by the runner. The protocol itself is described in `roost.runner.shim`.
"""

from __future__ import annotations

import os
import struct
from collections import deque

HEADER = struct.Struct("!cI")
MAX_FRAME = 1 << 20
SOCKET_NAME = "shim.sock"
SPEC_NAME = "spec.json"
# Output kept while nobody reads it (bytes of frames).
DEFAULT_RING_BYTES = 1 << 20
# After the leader exits, how long to wait for the pipes to reach EOF (a
# process that escaped the group may still hold them open).
DRAIN_TIMEOUT_S = 2.0
READ_CHUNK = 64 * 1024
PR_SET_PDEATHSIG = 1

# Shim -> runner.
STATUS, STDOUT, STDERR, EXIT = b"t", b"o", b"e", b"x"
# Runner -> shim.
SIGNAL, KILL_CGROUP, COLLECT = b"s", b"k", b"c"
# Runner -> shim, sessions only.
INPUT, INPUT_EOF, WINSIZE, ACK = b"i", b"f", b"w", b"a"
RUNNER_KINDS = SIGNAL + KILL_CGROUP + COLLECT + INPUT + INPUT_EOF + WINSIZE + ACK


class ProtocolError(ValueError):
    """A frame that breaks the protocol (the message says how)."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def parse_frames(buf: bytearray, kinds: bytes) -> list[tuple[bytes, bytes]]:
    """Take the complete frames off the front of `buf` (pure).

    Raises ProtocolError on an unknown kind or an oversized length.
    """
    out: list[tuple[bytes, bytes]] = []
    while len(buf) >= HEADER.size:
        kind, length = HEADER.unpack_from(buf)
        if kind not in [kinds[i : i + 1] for i in range(len(kinds))]:
            raise ProtocolError(f"unknown frame kind {kind!r}")
        if length > MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes (at most {MAX_FRAME})")
        if len(buf) < HEADER.size + length:
            break
        out.append((kind, bytes(buf[HEADER.size : HEADER.size + length])))
        del buf[: HEADER.size + length]
    return out


def parse_signal(payload: bytes) -> int:
    """The signal number an `s` frame names (1..64), or ProtocolError."""
    text = payload.decode("ascii", "replace")
    if not text.isdigit() or not 0 < int(text) < 65:
        raise ProtocolError(f"bad signal {text[:16]!r}")
    return int(text)


def parse_number(payload: bytes) -> int:
    """The non-negative number an `a` frame names, or ProtocolError."""
    text = payload.decode("ascii", "replace")
    if not text.isdigit() or len(text) > 18:
        raise ProtocolError(f"bad number {text[:16]!r}")
    return int(text)


def parse_winsize(payload: bytes) -> tuple[int, int]:
    """(rows, cols) of a `w` frame, each clamped to 1..10000, or ProtocolError."""
    parts = payload.decode("ascii", "replace").split()
    if len(parts) != 2 or not all(p.isdigit() and len(p) < 8 for p in parts):
        raise ProtocolError(f"bad window size {payload[:32]!r}")
    rows, cols = (min(max(int(p), 1), 10000) for p in parts)
    return rows, cols


class Kept:
    """Numbered output kept until acknowledged, resent to each new reader (pure)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: deque[tuple[int, bytes]] = deque()
        self.size = 0
        self.next_seq = 1  # the number of the next output frame
        self.sent = 0  # frames of `frames` already sent on this connection

    @property
    def first_seq(self) -> int:
        return self.frames[0][0] if self.frames else self.next_seq

    @property
    def full(self) -> bool:
        return self.size > self.limit

    def push(self, data: bytes) -> None:
        self.frames.append((self.next_seq, data))
        self.next_seq += 1
        self.size += len(data)

    def ack(self, seq: int) -> None:
        while self.frames and self.frames[0][0] <= seq:
            _, data = self.frames.popleft()
            self.size -= len(data)
            self.sent = max(0, self.sent - 1)

    def rewind(self) -> None:
        """A new reader: everything kept is sent again, from the first."""
        self.sent = 0

    def pop(self) -> bytes | None:
        """The next frame to send (it stays kept)."""
        if self.sent >= len(self.frames):
            return None
        self.sent += 1
        return self.frames[self.sent - 1][1]


class Ring:
    """Frames waiting for a reader, bounded in bytes: the oldest go first (pure)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: deque[bytes] = deque()
        self.size = 0
        self.dropped = 0  # payload bytes lost to the bound

    def push(self, data: bytes, keep: bool = False) -> None:
        """Queue a frame; unless `keep`, drop the oldest while over the bound."""
        self.frames.append(data)
        self.size += len(data)
        while not keep and self.size > self.limit and len(self.frames) > 1:
            old = self.frames.popleft()
            self.size -= len(old)
            self.dropped += len(old) - HEADER.size

    def pop(self) -> bytes | None:
        if not self.frames:
            return None
        data = self.frames.popleft()
        self.size -= len(data)
        return data


def strings(spec: dict[str, object], key: str) -> list[str]:
    """A list of strings from the spec (the runner wrote it; still, no surprises)."""
    value = spec.get(key)
    return [str(x) for x in value] if isinstance(value, list) else []


def status_of(
    pid: int,
    started: float,
    returncode: int | None,
    dropped: int,
    first_seq: int = 1,
    input_offset: int = 0,
) -> dict[str, object]:
    return {
        "pid": pid,
        "started": started,
        "exited": returncode is not None,
        "returncode": returncode,
        "dropped": dropped,
        "shim": os.getpid(),
        "first_seq": first_seq,
        "input_offset": input_offset,
    }


def session_of(spec: dict[str, object]) -> dict[str, object] | None:
    """The spec's `session` object: None for an instance."""
    session = spec.get("session")
    return session if isinstance(session, dict) else None


def bind_path(directory_fd: int, name: str) -> str:
    """A socket path of any directory depth: sun_path holds 108 bytes, so
    reach it through the directory's descriptor (Linux resolves /proc/self/fd)."""
    return f"/proc/self/fd/{directory_fd}/{name}"
