"""Turning instance output into log lines, and holding them until shipped.

`LineSplitter` cuts a byte stream into lines without ever holding more than
`max_line` bytes of one line: a longer line goes out in pieces, so a process
writing megabytes without a newline costs bounded memory.

`LogBuffer` is the bounded queue between the instances and the controller.
When the controllers are unreachable it drops the OLDEST lines (recent output
is what an operator wants when things recover) and counts what it dropped per
app; the next batch taken starts with a platform line saying so. Pure: no I/O,
the clock is injected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from roost.wire.messages import MAX_LOG_LINE, LogLine

MAX_LINE = MAX_LOG_LINE
DROP_NOTICE = "log lines were dropped while the controllers were unreachable"


class LineSplitter:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        buf = self._partial
        buf += data
        start, end = 0, len(buf)
        while start < end:
            nl = buf.find(b"\n", start, start + self.max_line + 1)
            if nl >= 0:
                out.append(_text(buf[start:nl]))
                start = nl + 1
            elif end - start > self.max_line:
                # No newline within max_line: this piece of the line goes out alone.
                out.append(_text(buf[start : start + self.max_line]))
                start += self.max_line
            else:
                break
        del buf[:start]
        return out

    def flush(self) -> list[str]:
        """The unterminated rest, at end of stream."""
        if not self._partial:
            return []
        rest = _text(self._partial)
        self._partial = bytearray()
        return [rest]


def _text(raw: bytes | bytearray) -> str:
    return bytes(raw).rstrip(b"\r").decode("utf-8", errors="replace")


class LogBuffer:
    def __init__(self, max_lines: int, clock: Callable[[], float]) -> None:
        self.max_lines = max_lines
        self._clock = clock
        self._lines: deque[LogLine] = deque()
        self.dropped: dict[str, int] = {}
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._lines)

    def push(self, line: LogLine) -> None:
        self._lines.append(line)
        self._trim()

    def take(self, n: int) -> list[LogLine]:
        """Up to `n` oldest lines, preceded by a notice per app that lost lines."""
        batch: list[LogLine] = []
        if self.dropped:
            now = self._clock()
            for app, count in sorted(self.dropped.items()):
                batch.append(
                    LogLine(
                        app=app,
                        ts=now,
                        source="platform",
                        process="runner",
                        stream="stderr",
                        line=f"{count} {DROP_NOTICE}",
                    )
                )
            self.dropped = {}
        while self._lines and len(batch) < n:
            batch.append(self._lines.popleft())
        return batch

    def requeue(self, batch: list[LogLine]) -> None:
        """Put back a batch that could not be sent, ahead of newer lines."""
        for line in reversed(batch):
            if (
                line.source == "platform"
                and line.process == "runner"
                and line.line.endswith(DROP_NOTICE)
            ):
                # A drop notice: fold it back into the counter instead.
                count = int(line.line.split(" ", 1)[0])
                self.dropped[line.app] = self.dropped.get(line.app, 0) + count
                continue
            self._lines.appendleft(line)
        self._trim()

    def _trim(self) -> None:
        while len(self._lines) > self.max_lines:
            old = self._lines.popleft()
            self.dropped[old.app] = self.dropped.get(old.app, 0) + 1
            self.dropped_total += 1
