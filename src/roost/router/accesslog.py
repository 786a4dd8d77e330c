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

try:
    import cython
except ImportError:  # (Cython is a build tool: the router runs as plain Python without it)
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

if cython.compiled:  # (C functions for `_put`; compiled code only)
    from cython.cimports.cpython.bytearray import PyByteArray_AS_STRING
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING
    from cython.cimports.libc.string import memcpy

if TYPE_CHECKING:
    from roost.router.client import ClientConnection
    from roost.router.exchange import Exchange

# The buffer's size: lines are copied into it and it is written out when the
# next line does not fit (or at the sweep's flush). Made once and zeroed, so
# every worker holds all of it: 64 KiB is one write per few hundred requests.
_FLUSH_BYTES = 64 * 1024
# The bytes of a line that are always there (' - ', the quotes, ' host=' ...).
_FIXED = sum(map(len, (b" - ", b" ", b' "', b'" "', b'" host=', b" app=", b" inst=", b"\n")))


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


def _put(buf: bytearray, at: int, piece: bytes) -> int:
    """`piece` copied into `buf` at `at` (room known to be there): the offset
    after it. Compiled, a memcpy."""
    n = len(piece)
    if cython.compiled:
        memcpy(PyByteArray_AS_STRING(buf) + at, PyBytes_AS_STRING(piece), n)
    else:  # (an else, not a fall-through: Cython warns of unreachable code)
        buf[at : at + n] = piece
    return at + n


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
        self._buf = bytearray(_FLUSH_BYTES)  # lines written, up to `_size`
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
        peer = client.peer
        user = user or b"-"
        stamped = self._stamped
        method = ex.method or b"-"
        url = url or b"-"
        sent = _STATUS[size] if 0 <= size < 1000 else b"%d" % size
        host = host or b"-"
        app = entry.label if entry is not None else b"-"
        inst = slot.label if slot is not None and not ex.local else b"-"
        rid = rid or b"-"
        # The pieces copied straight into the buffer: a join of them made a
        # tuple, a bytes for the line and, at the flush, a second copy of it
        # (together about half of this line's cost, measured).
        n = _FIXED + len(peer) + len(user) + len(stamped) + len(method) + len(url)
        n += len(version) + len(sent) + len(referer) + len(agent) + len(host) + len(app)
        n += len(inst) + len(timing) + len(rid)
        at = self._reserve(n)
        buf = self._buf
        at = _put(buf, at, peer)
        at = _put(buf, at, b" - ")
        at = _put(buf, at, user)
        at = _put(buf, at, stamped)
        at = _put(buf, at, method)
        at = _put(buf, at, b" ")
        at = _put(buf, at, url)
        at = _put(buf, at, version)
        at = _put(buf, at, sent)
        at = _put(buf, at, b' "')
        at = _put(buf, at, referer)
        at = _put(buf, at, b'" "')
        at = _put(buf, at, agent)
        at = _put(buf, at, b'" host=')
        at = _put(buf, at, host)
        at = _put(buf, at, b" app=")
        at = _put(buf, at, app)
        at = _put(buf, at, b" inst=")
        at = _put(buf, at, inst)
        at = _put(buf, at, timing)
        at = _put(buf, at, rid)
        _put(buf, at, b"\n")

    def append(self, line: bytes) -> None:
        """A line written as it is (for tests of the file's handling)."""
        _put(self._buf, self._reserve(len(line)), line)

    def _reserve(self, n: int) -> int:
        """Room for `n` more bytes in the buffer, after the lines in it (flushed
        first when they leave too little; the buffer grows for a line longer
        than all of it): the offset they go at."""
        if self._size + n > len(self._buf):
            self.flush()
            if n > len(self._buf):
                self._buf = bytearray(n)
        at = self._size
        self._size = at + n
        return at

    def flush(self) -> None:
        self.tick()
        if self._size:
            n = self._size
            self._size = 0
            try:
                with memoryview(self._buf) as view:
                    os.write(self._fd, view[:n])
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
