"""Connections from the router to app instances: the response side of a proxied
exchange, and the pool of idle keep-alive connections.

Theory of operation: an `Upstream` is attached to at most one `Exchange` at a
time. httptools parses the instance's response to find where it ends; bytes go
to the client batched, one write per read. When the response ends (and the
request was fully sent, and the instance allows keep-alive) the connection
goes back to its slot's LIFO pool; anything else closes it. Completion is
handled after `feed_data` returns, never inside a parser callback, so a
connection is never handed to another exchange while its parser runs.

Two ways to relay a response:
- pass-through (the common case): the parser gets no header or body
  callbacks (they would cost a Python call each). The response head is taken
  raw from the bytes read, edited (hop-by-hop headers out; X-Request-Id,
  expiry, Connection: close in), and the body bytes are forwarded untouched,
  chunked framing included. A Content-Length body is cut at its length; bytes
  past the end of a chunked body (an instance talking out of turn) break the
  connection rather than reach the client.
- re-framing (`reframe.py`), when the body must change: on-the-fly gzip, or an
  HTTP/1.0 client that cannot take chunked encoding.

A response to HEAD has no body whatever its headers say, which httptools cannot
be told: the exchange ends at the head and the parser is replaced. A
close-delimited response ends at EOF, which httptools cannot be told either:
`connection_lost` completes it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from email.utils import formatdate
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from roost.router.balance import Slot
from roost.router.h1 import LAST_CHUNK, NO_BODY_STATUS, http_date
from roost.router.scan import cut, plain_response
from roost.router.sockwrite import put, stream_fd

if TYPE_CHECKING:
    from roost.router.context import Context
    from roost.router.exchange import Exchange

# Idle connections kept per instance: a burst needing more closes the rest as
# they come back, and the next burst connects again (measured, issue 21: a
# paced round of 100 client connections at 10,000/s made 255-484 connects
# after its start with 64, 61-85 with 128, nginx with `keepalive 128` 35-115).
# Idle ones close after ROOST_ROUTER_UPSTREAM_IDLE_S whatever the number.
MAX_IDLE_PER_SLOT = 128


class _Nobody:
    """A parser's protocol that takes no callbacks (see `_DEAD_PARSER`)."""


# What a closed instance connection holds instead of its parser: the parser
# holds the connection's callbacks (bound methods), a cycle only the garbage
# collector would free (client.py's `_DEAD_PARSER` says why that matters).
_DEAD_PARSER = HttpResponseParser(_Nobody())

# Header lines the pass-through path removes (lowercased, with their leading CRLF).


class Upstream:
    # An asyncio protocol by duck typing, like ClientConnection (see there).
    __slots__ = (
        "broken",
        "chunk_out",
        "closed",
        "complete",
        "ctx",
        "deadline",
        "ex",
        "fd",
        "hbuf",
        "head_only",
        "hpos",
        "idle_since",
        "is_closing",
        "out",
        "parser",
        "queued",
        "reading_paused",
        "received",
        "reframer",
        "reusable",
        "reused",
        "slot",
        "started",
        "transport",
        "tunnel",
        "until_close",
    )

    def __init__(self, ctx: Context, slot: Slot) -> None:
        self.ctx = ctx
        self.slot = slot
        self.parser = HttpResponseParser(self)
        self.out: list[bytes] = []
        self.ex: Exchange | None = None
        self.transport: Any = None
        self.fd = -1  # the socket, while sockwrite.put may write to it directly
        self.queued = False  # bytes went through the transport since its buffer was empty
        self.is_closing: Any = (
            None  # transport.is_closing, bound once (asked per response and write)
        )
        self.received = False  # any byte of the current response arrived
        self.started = False  # the current response's head was forwarded
        self.complete = False
        self.reusable = False
        self.until_close = False  # the response body ends at EOF
        self.chunk_out = False  # chunk-encode a close-delimited body towards the client
        self.head_only = False  # a HEAD response: any body byte is out of turn
        self.tunnel = False
        self.closed = False
        self.broken = False  # the instance sent bytes past its response
        self.reused = False  # served an earlier request (a failure may be a stale keep-alive)
        self.reading_paused = False
        self.deadline = 0.0
        self.idle_since = 0.0
        self.hbuf = b""  # bytes of the response so far, until its head is complete
        self.hpos = 0  # where the current head starts in hbuf (after interim responses)
        self.reframer: Any = None  # a Reframer while re-framing this response

    # ---------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.fd = stream_fd(transport)
        self.is_closing = transport.is_closing

    def write(self, data: bytes) -> None:
        """Bytes to the instance, in order (sockwrite.put: straight to the
        socket while the transport holds none)."""
        self.queued = put(self.transport, self.is_closing, self.fd, self.queued, data)

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            # Bytes on an idle pooled connection: the instance is confused; drop it.
            self.close()
            return
        if self.tunnel:
            ex.client.write(data)
            return
        self.received = True
        started = self.started
        if not started and self.reframer is None:
            if not self.hbuf and self._plain_response(ex, data):
                return
            self.hbuf = self.hbuf + data if self.hbuf else data
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._flush(ex)
            ex.start_tunnel(self, data[exc.args[0] :])
            return
        except HttpParserError as exc:
            self.out.clear()
            ex.upstream_broken(self, f"invalid response from instance: {exc}")
            return
        out = self.out
        if self.reframer is None:
            if not started:
                if self.started:  # the head completed in this read: the rest is body
                    data = self.hbuf[self.hpos :]
                    self.hbuf = b""
                else:
                    data = b""
            if data:
                if self.chunk_out or self.head_only:
                    self._body(data)
                else:  # pass-through: the bytes as they came
                    ex.bytes_out += len(data)
                    out.append(data)
        if self.broken:
            out.clear()
            ex.upstream_broken(self, "instance sent bytes past the end of its response")
            return
        if out:
            ex.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self.complete:
            ex.response_complete(self)
        else:
            self.deadline = self.ctx.now + self.ctx.idle_timeout

    def _plain_response(self, ex: Exchange, data: bytes) -> bool:
        """If `data` is exactly one plain response (scan.py) that the exchange
        takes as it came: what the parser callbacks and the pass-through below
        would do with it, without them."""
        if ex.expires is not None or not ex.keep_alive or ex.method == b"HEAD" or self.hpos:
            return False
        end, code, i, j = plain_response(data)
        if not end:
            return False
        self.started = True
        ex.status = code
        ex.bytes_out += len(data) - end
        self.reusable = self.complete = True
        # (the Connection line, found by the scan: `_connection_line` for one)
        ex.client.write(cut(data, i, j) if j else data)
        ex.response_complete(self)
        return True

    def _flush(self, ex: Exchange) -> None:
        out = self.out
        if out:
            ex.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _body(self, data: bytes) -> None:
        # Bytes past the end of the response make the parser start another
        # message (`broken`) or fail, and then nothing of this read is relayed.
        ex = self.ex
        assert ex is not None
        if self.head_only:
            self.broken = True
            return
        if self.chunk_out:
            if self.complete:
                return
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if data:
            ex.bytes_out += len(data)
            self.out.append(data)

    def eof_received(self) -> bool | None:
        return False  # close; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._lost(exc)
        finally:
            # (nothing reads a closed connection: the parser and a reframer
            # hold this one, a cycle for the collector; see `_DEAD_PARSER`)
            self.parser = _DEAD_PARSER
            self.reframer = None

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fd = -1
        ex = self.ex
        if ex is None:
            try:
                self.slot.idle.remove(self)
            except ValueError:
                pass
            return
        if self.tunnel:
            ex.tunnel_closed()
            return
        if self.until_close and self.started and not self.complete:
            # A close-delimited body ends here: that is its normal end.
            if self.reframer is not None:
                self.reframer.finish()
            elif self.chunk_out:
                self.out.append(LAST_CHUNK)
            self.reusable = False
            self.complete = True
            self._flush(ex)
            ex.response_complete(self)
            return
        if not self.complete:
            ex.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.ex is not None:
            self.ex.client.pause(2)

    def resume_writing(self) -> None:
        if self.ex is not None:
            self.ex.client.resume(2)

    # ---------------------------------------------------------------- life cycle

    def begin(self, ex: Exchange) -> None:
        """Take on an exchange (fresh or from the pool)."""
        self.ex = ex
        self.received = self.started = self.complete = self.reusable = False
        if self.until_close or self.chunk_out or self.head_only:
            self.until_close = self.chunk_out = self.head_only = False
        self.hpos = 0  # (hbuf is empty again once a head is complete)
        if ex.http10 or ex.accept_gzip:
            from roost.router.reframe import Reframer

            self.reframer = Reframer(self, ex)
            self.parser = HttpResponseParser(self.reframer)
        elif self.reframer is not None:
            self.reframer = None
            self.parser = HttpResponseParser(self)
        self.deadline = self.ctx.now + self.ctx.first_byte_timeout

    def release(self, reusable: bool) -> None:
        """The exchange is done with us: back to the pool or closed."""
        self.ex = None
        self.deadline = 0.0
        slot = self.slot
        if (
            reusable
            and not self.closed
            and not slot.retired
            and len(slot.idle) < MAX_IDLE_PER_SLOT
            and not self.is_closing()
        ):
            if self.reading_paused:
                self.transport.resume_reading()
                self.reading_paused = False
            self.reused = True
            self.idle_since = self.ctx.now
            slot.idle.append(self)
        else:
            self.close()

    def close(self) -> None:
        self.ex = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.ex = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    # ---------------------------------------------------------------- pass-through callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            self.broken = True  # a second message in one read: the instance is out of turn

    def on_headers_complete(self) -> None:
        ex = self.ex
        assert ex is not None
        parser = self.parser
        code = parser.get_status_code()
        hbuf = self.hbuf
        hpos = self.hpos
        end = hbuf.find(b"\r\n\r\n", hpos) + 4
        if (
            hpos == 0
            and code >= 200
            and code != 101
            and ex.expires is None
            and ex.keep_alive
            and ex.method != b"HEAD"
            and hbuf[7] != 48  # not "HTTP/1.0"
            and parser.should_keep_alive()  # (so: a length or chunked, nothing to re-frame)
            and self._pass_through(hbuf, end, ex)
        ):
            self.started = True
            ex.status = code
            return
        raw = hbuf[hpos:end]
        self.hpos = end
        if code < 200 and code != 101:
            # Interim response (100 Continue, 103 Early Hints): relay, keep waiting.
            self.out.append(raw)
            return
        self.started = True
        ex.status = code
        self.out.append(self._edit_head(raw, code, ex))
        if ex.method == b"HEAD" and code != 101:
            # No body follows whatever the headers say: end here, fresh parser next time.
            self.reusable = self.parser.should_keep_alive()
            self.complete = True
            self.head_only = True
            self.parser = HttpResponseParser(self)

    def _pass_through(self, hbuf: bytes, end: int, ex: Exchange) -> bool:
        """The usual response: forward this read as it came, less a plain
        `Connection: keep-alive|close` line, without copying head and body
        apart. False when the head needs `_edit_head` (more to cut)."""
        i, j = _connection_line(hbuf, end)
        if j < 0:
            return False
        self.out.append(hbuf if i < 0 else hbuf[:i] + hbuf[j:])
        ex.bytes_out += len(hbuf) - end
        self.hpos = len(hbuf)  # all of it is in `out` already
        return True

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if self.chunk_out:
            self.out.append(LAST_CHUNK)
        self.reusable = self.parser.should_keep_alive()
        self.complete = True

    def _edit_head(self, head: bytes, code: int, ex: Exchange) -> bytes:
        """The instance's raw response head, made fit for the client.

        llhttp (strict) has already refused obsolete line folding, bare LFs,
        duplicate Content-Length and Content-Length with Transfer-Encoding, so
        a header is exactly one CRLF-terminated line and can be cut as bytes.
        Hop-by-hop headers go: Connection, and the headers it names (which is
        how Keep-Alive and Upgrade are announced).
        """
        if code == 101:  # Connection and Upgrade stay: they are the point
            return head
        lh = head.lower()
        extra = b""
        # Framing first, on the untouched copy (cutting lines below would move offsets).
        # (bytes.find is measurably cheaper than `in` here, and this runs per response)
        if (
            # (keep-alive means the parser found the body's end in the head:
            # a length or chunked; the usual case skips the search)
            not self.parser.should_keep_alive()
            and code not in NO_BODY_STATUS
            and ex.method != b"HEAD"
            and lh.find(b"\r\ncontent-length:") < 0
        ):
            te = lh.find(b"\r\ntransfer-encoding:")
            if te < 0 or b"chunked" not in lh[te : lh.find(b"\r\n", te + 2)]:
                # Delimited by EOF: chunk it so the client connection can stay open.
                self.until_close = True
                self.chunk_out = True
                if te >= 0:
                    head, lh = _cut(head, lh, b"\r\ntransfer-encoding:")
                extra = b"Transfer-Encoding: chunked\r\n"
        if (
            ex.expires is not None
            and lh.find(b"\r\ncache-control:") < 0
            and lh.find(b"\r\nexpires:") < 0
        ):
            extra += expires_headers(ex.expires)
        i, j = _connection_line(lh, len(lh))
        if i >= 0:
            head = head[:i] + head[j:]
        elif j < 0:  # other headers named, or a Keep-Alive header: cut them all
            tokens: list[bytes] = []  # (what every Connection header names)
            i = lh.find(b"\r\nconnection:")
            while i >= 0:
                j = lh.find(b"\r\n", i + 2)
                tokens += lh[i + 13 : j].split(b",")
                i = lh.find(b"\r\nconnection:", j)
            for token in tokens:
                token = token.strip()
                if token and token not in (b"keep-alive", b"close"):
                    head, lh = _cut(head, lh, b"\r\n" + token + b":")
            head, lh = _cut(head, lh, b"\r\nconnection:")
            # (Keep-Alive is hop-by-hop whether or not Connection names it)
            head, lh = _cut(head, lh, b"\r\nkeep-alive:")
        if head[7] == 48:  # "HTTP/1.0": we answer as HTTP/1.1
            head = b"HTTP/1.1" + head[8:]
        if not ex.keep_alive:
            extra += b"Connection: close\r\n"
        if extra:
            return head[:-2] + extra + b"\r\n"
        return head


def _connection_line(head: bytes, end: int) -> tuple[int, int]:
    """The hop-by-hop cleaning a response head (ending at `end`) needs:
    (start, stop) of its Connection line when cutting that one line is all;
    (-1, 0) when there is no Connection header; (-1, -1) when more must go
    (headers the Connection header names, a Keep-Alive header, or a second
    Connection header).

    One pass over the bytes, comparing names and values without regard to
    case (llhttp has checked that every line ends in CRLF): compiled, this is
    several times cheaper than lowercasing the head and searching it, and it
    runs for every response."""
    i = -1  # the CRLF before the (first) Connection line
    j = 0  # the CRLF after it
    seen = 0
    plain = False
    keep_alive = False
    k = 0
    while k < end:
        if head[k] != 10:  # (LF: a header line starts after it)
            k += 1
            continue
        k += 1
        if k >= end:
            break
        c = head[k] | 32  # (a letter's lowercase; other bytes fail the full compare)
        if c == 99 and _named(head, k, end, b"connection:"):  # "c"
            seen += 1
            if seen == 1:
                e = head.find(b"\r", k, end)
                i, j = k - 2, e
                plain = _value_is(head, k + 11, e, b"keep-alive") or _value_is(
                    head, k + 11, e, b"close"
                )
        elif c == 107 and _named(head, k, end, b"keep-alive:"):  # "k"
            keep_alive = True
    if seen == 0:
        return -1, 0
    if seen == 1 and plain and not keep_alive:
        return i, j
    return -1, -1


def _named(head: bytes, at: int, end: int, name: bytes) -> bool:
    """Whether the line at `at` starts with `name` (lowercase), in any case."""
    n = len(name)
    if at + n > end:
        return False
    for m in range(n):
        c = head[at + m]
        if 65 <= c <= 90:  # A-Z
            c += 32
        if c != name[m]:
            return False
    return True


def _value_is(head: bytes, start: int, stop: int, want: bytes) -> bool:
    """Whether head[start:stop], less surrounding blanks, is `want` (lowercase) in any case."""
    while start < stop and head[start] in (32, 9):
        start += 1
    while stop > start and head[stop - 1] in (32, 9):
        stop -= 1
    return stop - start == len(want) and _named(head, start, stop, want)


def _cut(head: bytes, lh: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """Remove every header line starting with `marker` (CRLF + lowercased name + colon)."""
    i = lh.find(marker)
    while i >= 0:
        j = lh.find(b"\r\n", i + 2)
        head = head[:i] + head[j:]
        lh = lh[:i] + lh[j:]
        i = lh.find(marker, i)
    return head, lh


def expires_headers(seconds: int) -> bytes:
    when = (
        formatdate(time.time() + seconds, usegmt=True).encode() if seconds > 0 else http_date.now()
    )
    return b"Cache-Control: max-age=%d\r\nExpires: %s\r\n" % (max(0, seconds), when)


async def open_upstream(ctx: Context, slot: Slot) -> Upstream:
    """Connect to an instance: its unix socket when it is on this host, else
    TCP. No timeout here: the caller's task is cancelled at its deadline
    (`Relay.connect_timeout`, from the sweep)."""
    b = slot.backend
    loop = ctx.loop

    # (a partial, not a closure: compiled, a coroutine's locals live in its
    # closure's scope, which a closure then refers to: a cycle per connect)
    factory = cast(Callable[[], asyncio.Protocol], partial(Upstream, ctx, slot))
    if b.unix_socket and (
        not b.host_id or b.host_id == ctx.host_id or os.path.exists(b.unix_socket)
    ):
        try:
            _, proto = await loop.create_unix_connection(factory, b.unix_socket)
            return cast(Upstream, proto)
        except (FileNotFoundError, ConnectionRefusedError):
            if not b.port:
                raise
    _, proto = await loop.create_connection(factory, b.host or "127.0.0.1", b.port)
    return cast(Upstream, proto)
