"""One access log line per request, buffered and written in batches.

Lines go to a file opened with O_APPEND (workers share it; each flush is one
write of whole lines). Formatting per request is one bytes `%` operation; the
timestamp is cached per second. Values from the client are escaped so a
request cannot forge log lines.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.router.client import ClientConnection
    from roost.router.exchange import Exchange

_FLUSH_BYTES = 256 * 1024


_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')


def _clean(value: bytes) -> bytes:
    if _UNSAFE.search(value):
        value = value.decode("latin-1").encode("unicode_escape").replace(b'"', b'\\"')
    return value


class AccessLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._buf: list[bytes] = []
        self._size = 0
        self._second = -1
        self._stamp = b""

    def _now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)).encode()
        return self._stamp

    def log(self, client: ClientConnection, ex: Exchange) -> None:
        referer = agent = b"-"
        for name, value in ex.headers:
            if len(name) == 7 and name.lower() == b"referer":
                referer = value
            elif len(name) == 10 and name.lower() == b"user-agent":
                agent = value
        entry = ex.entry
        slot = ex.slot
        line = (
            b'%s - %s [%s] "%s %s HTTP/%s" %d %d "%s" "%s" host=%s app=%s inst=%s ms=%.1f rid=%s\n'
            % (
                client.peer,
                _clean(ex.user) if ex.user else b"-",
                self._now(),
                ex.method or b"-",
                _clean(ex.url) or b"-",
                b"1.0" if ex.http10 else b"1.1",
                ex.status,
                ex.bytes_out,
                _clean(referer),
                _clean(agent),
                _clean(ex.host) or b"-",
                entry.name.encode() if entry is not None else b"-",
                slot.backend.instance_id.encode() if slot is not None and not ex.local else b"-",
                (client.ctx.loop.time() - ex.t0) * 1000.0,
                ex.rid or b"-",
            )
        )
        self._buf.append(line)
        self._size += len(line)
        if self._size > _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            data = b"".join(self._buf)
            self._buf.clear()
            self._size = 0
            try:
                os.write(self._fd, data)
            except OSError:
                pass  # a full disk must not take the router down; lines are dropped

    def close(self) -> None:
        self.flush()
        os.close(self._fd)
