"""One access log line per request, buffered and written in batches.

Lines go to a file opened with O_APPEND (workers share it; each flush is one
write of whole lines). Formatting per request is one bytes `%` operation; the
timestamp is cached per second. Values from the client are escaped so a
request cannot forge log lines. Past `max_bytes` the file is rotated, keeping
`keep` old ones (roost.router.logrotate: safe with several workers appending).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from roost.router.logrotate import moved, rotate

if TYPE_CHECKING:
    from roost.router.client import ClientConnection
    from roost.router.exchange import Exchange

_FLUSH_BYTES = 256 * 1024


# Printable ASCII except the quote and backslash: values made only of these
# can go into a line as they are. (translate() is several times cheaper than a
# regex scan here, and this runs per request.)
_SAFE = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


# Whether a byte may go into a line as it is (by byte value).
_SAFE_BYTE = bytes(1 if c in _SAFE else 0 for c in range(256))
# Numbers below 1000 (statuses, most milliseconds, small bodies) and the tenth
# of a millisecond as bytes, looked up: a bytes `%` costs more than the rest
# of the line's pieces together.
_STATUS = tuple(b"%d" % c for c in range(1000))
_DIGITS = tuple(b"%d" % d for d in range(10))
# Whole runs of the line for the usual values, so the join has fewer pieces
# (each costs about as much as a short copy): the version, status and the
# space after it, by status (100-599); and " ms=M.T rid=" by tenths of a
# millisecond below 100 ms.
_V11 = tuple(b' HTTP/1.1" %d ' % c for c in range(600))
_V10 = tuple(b' HTTP/1.0" %d ' % c for c in range(600))
_MS = tuple(b" ms=%d.%d rid=" % (t // 10, t % 10) for t in range(1000))


def _safe(value: bytes) -> bool:
    """Whether `value` needs no escaping (compiled: a loop over its bytes,
    where translate() made a copy of each value to find out)."""
    table = _SAFE_BYTE
    for i in range(len(value)):  # noqa: SIM110  (all() of a generator is not compiled to a loop)
        if not table[value[i]]:
            return False
    return True


def _escape(value: bytes) -> bytes:
    if value.translate(None, _SAFE):
        value = value.decode("latin-1").encode("unicode_escape").replace(b'"', b'\\"')
    return value


class AccessLog:
    __slots__ = (
        "_buf",
        "_fd",
        "_second",
        "_size",
        "_stamped",
        "keep",
        "max_bytes",
        "path",
        "stamp",
    )

    def __init__(self, path: Path, max_bytes: int = 64 << 20, keep: int = 5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._fd = self._open()
        self._buf: list[bytes] = []
        self._size = 0
        self._second = -1
        self.stamp = b""
        self._stamped = b""  # ' [STAMP] "': the line's run around the stamp
        self.tick()

    def tick(self) -> None:
        """Refresh the timestamp (the worker's sweep calls this a few times a
        second, so a request pays an attribute read, not a clock read)."""
        second = int(time.time())
        if second != self._second:
            self._second = second
            self.stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)).encode()
            self._stamped = b" [" + self.stamp + b'] "'

    def log(self, client: ClientConnection, ex: Exchange, now: float) -> None:
        referer, agent = ex.referer, ex.agent  # (picked up while routing the request)
        url, host, user, rid = ex.url, ex.host, ex.user, ex.rid
        if not (
            _safe(url) and _safe(referer) and _safe(agent) and _safe(host) and _safe(user)
        ) or not _safe(rid):
            # Something from the client needs escaping: a request cannot forge lines.
            url, referer, agent = _escape(url), _escape(referer), _escape(agent)
            host, user, rid = _escape(host), _escape(user), _escape(rid)
        entry = ex.entry
        slot = ex.slot
        # Milliseconds to a tenth, from integers: formatting a float (%.1f)
        # was about half the cost of this line.
        tenths = int((now - ex.t0) * 10000.0 + 0.5)
        status = ex.status
        size = ex.bytes_out
        ms = tenths // 10
        # One join of the pieces: a bytes `%` with sixteen arguments cost about
        # twice as much (it parses its format and asks each argument for a buffer).
        if 100 <= status < 600:
            version = _V10[status] if ex.http10 else _V11[status]
        else:
            version = b' HTTP/1.0" %d ' % status if ex.http10 else b' HTTP/1.1" %d ' % status
        if 0 <= tenths < 1000:
            timing = _MS[tenths]
        else:
            timing = b" ms=%s.%s rid=" % (
                _STATUS[ms] if 0 <= ms < 1000 else b"%d" % ms,
                _DIGITS[tenths % 10],
            )
        line = b"".join(
            (
                client.peer,
                b" - ",
                user or b"-",
                self._stamped,
                ex.method or b"-",
                b" ",
                url or b"-",
                version,
                _STATUS[size] if 0 <= size < 1000 else b"%d" % size,
                b' "',
                referer,
                b'" "',
                agent,
                b'" host=',
                host or b"-",
                b" app=",
                entry.label if entry is not None else b"-",
                b" inst=",
                slot.label if slot is not None and not ex.local else b"-",
                timing,
                rid or b"-",
                b"\n",
            )
        )
        self._buf.append(line)
        self._size += len(line)
        if self._size > _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        self.tick()
        if self._buf:
            data = b"".join(self._buf)
            self._buf.clear()
            self._size = 0
            try:
                os.write(self._fd, data)
            except OSError:
                pass  # a full disk must not take the router down; lines are dropped
            self._follow()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _follow(self) -> None:
        """Rotate the file when it is past its limit; reopen it when it was
        rotated (by this worker or another one sharing it)."""
        try:
            st = os.fstat(self._fd)
            if st.st_size >= self.max_bytes:
                rotate(self.path, self.keep, st.st_ino)
            if moved(self._fd, self.path):
                fd = self._open()
                os.close(self._fd)
                self._fd = fd
        except OSError:
            pass  # (as for writes: logging trouble never takes the router down)

    def close(self) -> None:
        self.flush()
        os.close(self._fd)
