"""The client side of the proxy: one asyncio protocol per visitor connection.

Theory of operation: httptools parses the byte stream and calls back into this
object. `cur` is the request being parsed; `active` is the one being answered.
They differ only when a client pipelines: later requests wait in `queue` (with
reading paused, so buffering stays bounded) and start when the active one is
done. Responses are always written in request order.

Deadlines are absolute times checked by the worker's periodic sweep, not timers
per request: a connection has `header_timeout` from its first byte to a
complete request head (a client trickling headers cannot extend it), and
`idle_timeout` of silence when idle between requests or mid-body. A stuck
client that stops reading is cut off after `idle_timeout` too.

Reading is paused for three independent reasons (bit flags): a pipelined
request is waiting (1), the instance connection cannot take more bytes (2),
or request bytes are buffered while no instance connection is ready yet (4).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from roost.router import upgrade
from roost.router.clienterror import Reject, parse_failed, reject, timed_out
from roost.router.context import monotonic
from roost.router.exchange import Exchange, new_exchange
from roost.router.scan import lane_head, lane_request, request_head, same, sub
from roost.router.sockwrite import put, stream_fd
from roost.wire.messages import StaticRoute

if TYPE_CHECKING:
    from roost.router.context import Context
    from roost.router.table import AppEntry
    from roost.router.upstream import Upstream

log = logging.getLogger("roost.router")


class _Nobody:
    """A parser's protocol that takes no callbacks (see `_DEAD_PARSER`)."""


# What a closed connection holds instead of its parser: a parser holds its
# protocol's callbacks, bound methods of the connection, so the two make a
# cycle that only the garbage collector frees, with the connection's
# transport, socket and lists. Dropped at connection_lost, the connection is
# freed by its count, and a burst of connections sets off no collection
# (daemon.settle_gc). Never fed: nothing reads a closed connection.
_DEAD_PARSER = HttpRequestParser(_Nobody())
_MISS: Any = object()  # (not in the Host cache)
LINGER_S = 2.0


def protocol_factory(ctx: Context, scheme: bytes) -> Callable[[], asyncio.Protocol]:
    """What `loop.create_server` takes: connections for one listener."""

    def make() -> asyncio.Protocol:
        return cast(asyncio.Protocol, ClientConnection(ctx, scheme))

    return make


class ClientConnection:
    """An asyncio protocol by duck typing: no `asyncio.Protocol` base, so that
    the compiled build (native.py) can make it an extension type; uvloop and
    asyncio only call the methods. `protocol_factory` gives it to them typed."""

    __slots__ = (
        "_drain",
        "active",
        "closed",
        "ctx",
        "cur",
        "deadline",
        "fd",
        "fwd_for",
        "head_bytes",
        "idle_since",
        "is_closing",
        "lingering",
        "memo_entry",
        "memo_gen",
        "memo_host",
        "parser",
        "paused",
        "peer",
        "plain",
        "queue",
        "queued",
        "read_size",
        "scheme",
        "transport",
        "tunnel",
        "upgrading",
        "write_deadline",
        "write_paused",
    )

    def __init__(self, ctx: Context, scheme: bytes = b"http") -> None:
        self.ctx = ctx
        self.scheme = scheme
        self.queue: deque[Exchange] = deque()
        self.parser = HttpRequestParser(self)
        self._drain: list[asyncio.Future[None]] = []
        self.transport: Any = None
        self.is_closing: Any = None  # transport.is_closing, bound once (asked per write)
        self.fd = -1  # the socket, while sockwrite.put may write to it directly
        self.queued = False  # bytes went through the transport since its buffer was empty
        self.cur: Exchange | None = None
        self.active: Exchange | None = None
        self.upgrading: Exchange | None = None
        self.tunnel: Upstream | None = None
        self.paused = 0
        self.write_paused = False
        self.write_deadline = 0.0
        self.deadline = 0.0
        self.idle_since = 0.0  # (coarse clock) when it last had no request, for a drain
        self.head_bytes = 0  # bytes read in earlier reads while the current head was incomplete
        self.read_size = 0  # size of the read being parsed
        self.closed = False
        self.lingering = False  # answered and half-closed: draining what the client still sends
        self.peer = b""
        # The router's X-Forwarded-* lines up to the host, the same for every
        # request of the connection (the plain lane writes it as one piece).
        self.fwd_for = b""
        # Requests are read by scan.request_head while each read is exactly one
        # plain request; from the first that is not, by httptools for good
        # (it may then hold part of a request).
        self.plain = True
        # The last plain request's Host and what the table said of it, while
        # the table is the same one (`ctx.table_gen`): a keep-alive client
        # sends the same Host every time, and comparing its bytes in place
        # spares a new bytes and a dict probe (hashing it) per request.
        self.memo_host = b""
        self.memo_entry: AppEntry | None = None
        self.memo_gen = -1  # (no table yet: the first request looks up)

    # ---------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.is_closing = transport.is_closing
        self.fd = stream_fd(transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0].encode() if isinstance(peer, tuple) and peer else b"unix"
        self.fwd_for = b"".join(
            (
                b"X-Forwarded-For: ",
                self.peer,
                b"\r\nX-Forwarded-Proto: ",
                self.scheme,
                b"\r\nX-Forwarded-Host: ",
            )
        )
        ctx = self.ctx
        ctx.clients.add(self)
        # A connection that never sends a full head is cut off like a slow one.
        self.deadline = ctx.now + ctx.header_timeout
        self.idle_since = ctx.now

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fd = -1
        self.ctx.clients.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        active = self.active
        if active is not None and not active.done:
            active.abort()
            active.status = active.status or 499  # nginx's "client closed request"
            active.done = True
            self._log(active)
        for ex in (self.cur, self.upgrading, *self.queue):
            if ex is not None:
                ex.abort()
        self.queue.clear()
        self.active = self.cur = self.upgrading = None
        for fut in self._drain:
            if not fut.done():
                fut.set_exception(ConnectionResetError("client went away"))
        self._drain.clear()
        self.parser = _DEAD_PARSER  # (the cycle through its callbacks: see there)

    def write(self, data: bytes) -> None:
        """Bytes to the client, in order (sockwrite.put: straight to the socket
        while the transport holds none)."""
        self.queued = put(self.transport, self.is_closing, self.fd, self.queued, data)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        if self.closed:
            return
        upgrading = self.upgrading
        if upgrading is not None:
            # Bytes after an upgrade request belong to the new protocol: hold them for the 101.
            upgrade.hold(self, upgrading, data)
            return
        self.read_size = len(data)
        if self.plain:
            if self.cur is None and self.active is None and self._plain_request(data):
                return
            self.plain = False
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            upgrade.requested(self, data, exc.args[0])
            return
        except HttpParserError as exc:
            parse_failed(self, exc)
            return
        cur = self.cur
        if cur is not None and not cur.head_done:
            # httptools buffers a header line until it ends: bound it here.
            self.head_bytes += len(data)
            if self.head_bytes > self.ctx.max_header_bytes:
                reject(self, 431, "Request header too large", "The request head is too large.")

    def eof_received(self) -> bool | None:
        # A half-closed client may still want its response (curl does this for
        # uploads); we close once the active exchange is answered.
        if self.closed or (self.active is None and self.cur is None) or self.scheme == b"https":
            return False  # (TLS has no half-close)
        if self.active is not None:
            self.active.keep_alive = False
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.ctx.now + self.ctx.idle_timeout
        ex = self.active
        if ex is not None and ex.up is not None:
            ex.up.pause_reading()
        if self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.up is not None:
            ex.up.resume_reading()
        if self.tunnel is not None:
            self.tunnel.resume_reading()
        waiters, self._drain = self._drain, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def drain(self) -> None:
        """Wait until the client has taken what we wrote (for streamed files)."""
        if self.closed:
            raise ConnectionResetError("client went away")
        if self.write_paused:
            fut: asyncio.Future[None] = self.ctx.loop.create_future()
            self._drain.append(fut)
            await fut

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def _plain_request(self, data: bytes) -> bool:
        """If `data` is exactly one plain request head (scan.py), what the
        parser callbacks below would do with it, without them."""
        ctx = self.ctx
        if len(data) > ctx.max_header_bytes:
            return False  # (httptools and the callbacks refuse it)
        url_end, hs, he, as_, ae, rs, re_ = lane_request(data, ctx.max_headers)
        if url_end:
            if self.memo_gen == ctx.table_gen and same(data, hs, he, self.memo_host):
                host = self.memo_host
                entry = self.memo_entry
            else:
                host = sub(data, hs, he)
                entry = ctx.host_cache.get(host, _MISS)
                if entry is _MISS:
                    entry = ctx.table.lookup(host)
                self.memo_host = host
                self.memo_entry = entry
                self.memo_gen = ctx.table_gen
            if entry is not None and entry.plain:
                return self._lane(data, url_end, host, entry, as_, ae, rs, re_)
        headers: list[bytes] = []
        url_end = request_head(data, headers, ctx.max_headers)
        if not url_end:
            return False
        if data[0] == 71:  # "G"
            ex = new_exchange(self, monotonic(), data[4:url_end])
            ex.method = b"GET"
        else:
            ex = new_exchange(self, monotonic(), data[5:url_end])
            ex.method = b"HEAD"
        ex.headers = headers
        ex.head_done = True
        ex.keep_alive = not ctx.draining
        ex.version_known = True  # HTTP/1.1: http10 stays False
        self._begin(ex, False)
        return True

    def _begin(self, ex: Exchange, routed: bool) -> None:
        """A plain request's exchange, its head read: what the parser's
        on_headers_complete and on_message_complete would do. `routed`: the
        lane has routed it and built its head (`Relay.proxy`), else
        `Exchange.start` does."""
        ctx = self.ctx
        self.cur = self.active = ex
        self.head_bytes = 0
        self.deadline = ctx.now + ctx.idle_timeout
        try:
            if routed:
                ex.proxy()
            else:
                ex.start()
        except Exception:
            log.error("router bug while parsing a request", exc_info=True)
            reject(self, 500, "Internal error", "The router failed on this request.")
            return
        # (on_message_complete: no body follows a plain head)
        self.cur = None
        if not ex.body_done:
            ex.end_body()
        if ex is self.active:
            self.deadline = 0.0

    def _lane(
        self,
        data: bytes,
        url_end: int,
        host: bytes,
        entry: AppEntry,
        as_: int,
        ae: int,
        rs: int,
        re_: int,
    ) -> bool:
        """The plain lane: a request `scan.lane_request` accepted, for an app
        with nothing but proxying to do (`entry.plain`). What `Exchange.start`
        would make of it, without reading its headers again: they go to the
        instance as they came (the scanner checked they are already in the form
        `start` writes), then the router's own. Anything else `start` checks
        cannot happen here (one Host, no framing, an origin-form target)."""
        ctx = self.ctx
        if data[0] == 71:  # "G"
            ex = new_exchange(self, monotonic(), sub(data, 4, url_end))
            ex.method = b"GET"
        else:
            ex = new_exchange(self, monotonic(), sub(data, 5, url_end))
            ex.method = b"HEAD"
        ex.head_done = True
        ex.body_done = True
        ex.keep_alive = not ctx.draining
        ex.version_known = True  # HTTP/1.1: http10 stays False
        ex.host = host
        ex.entry = entry
        if ae:
            ex.agent = sub(data, as_, ae)
        if re_:
            ex.referer = sub(data, rs, re_)
        rid = ctx.request_id()
        ex.rid = rid
        ex.pending.append(lane_head(data, self.fwd_for, host, rid))
        self._begin(ex, True)
        return True

    # ---------------------------------------------------------------- parser callbacks

    def on_url(self, url: bytes) -> None:
        # The first callback of every request (a request line always has a
        # target), so the exchange starts here: one parser callback fewer per
        # request than a separate on_message_begin.
        ex = self.cur
        if ex is None:
            ctx = self.ctx
            now = monotonic()
            self.cur = ex = Exchange(self, now, url)
            self.head_bytes = 0
            if self.active is None:
                self.deadline = now + ctx.header_timeout
        else:
            ex.url += url
        if len(ex.url) > self.ctx.max_header_bytes:
            raise Reject(414, "URL too long", "The requested URL is too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sizes are checked once the head is complete (a head within one read
        # is bounded by the read size) or, for heads spanning reads, in data_received.
        # Flat (name, value, name, value...): no tuple per header.
        headers = self.cur.headers  # type: ignore[union-attr]
        headers.append(name)
        headers.append(value)

    def on_headers_complete(self) -> None:
        ex = self.cur
        assert ex is not None
        headers = ex.headers
        ctx = self.ctx
        if len(headers) > 2 * ctx.max_headers:
            raise Reject(431, "Request header too large", "The request has too many headers.")
        if self.head_bytes + self.read_size > ctx.max_header_bytes:
            size = len(ex.url) + sum(map(len, headers)) + 2 * len(headers)  # (+ ": ", CRLF)
            if size > ctx.max_header_bytes:
                raise Reject(431, "Request header too large", "The request head is too large.")
        p = self.parser
        ex.head_done = True
        ex.method = p.get_method()
        # (a router that is ending answers with Connection: close: drain.py)
        ex.keep_alive = p.should_keep_alive() and not ctx.draining
        ex.upgrade = p.should_upgrade()
        if self.active is None:
            self.active = ex
            self.deadline = self.ctx.now + self.ctx.idle_timeout
            ex.start()  # (asks the parser for the version only when it must)
        else:
            # Started later, when the parser is on another request: ask now.
            ex.http10 = p.get_http_version() != "1.1"
            ex.version_known = True
            self.queue.append(ex)
            self.pause(1)

    def on_body(self, body: bytes) -> None:
        ex = self.cur
        assert ex is not None
        ex.bytes_in += len(body)
        if ex.bytes_in > self.ctx.max_body_bytes:
            raise Reject(413, "Request too large", "The request body is larger than allowed.")
        if ex is self.active:
            self.deadline = self.ctx.now + self.ctx.idle_timeout
        ex.send_body(body)

    def on_message_complete(self) -> None:
        ex = self.cur
        assert ex is not None
        self.cur = None
        if ex.req_chunked or not ex.body_done:
            ex.end_body()
        if ex is self.active:
            self.deadline = 0.0  # the instance's deadlines govern from here

    # ---------------------------------------------------------------- answering

    def exchange_done(self, ex: Exchange) -> None:
        self._log(ex)
        if self.active is ex:
            self.active = None
        if self.closed:
            return
        if not ex.keep_alive or not ex.body_done:
            self._finish(linger=not ex.body_done)
            return
        queue = self.queue
        if queue:
            nxt = queue.popleft()
            if not queue:
                self.resume(1)
            self.active = nxt
            self.deadline = 0.0 if nxt.body_done else self.ctx.now + self.ctx.idle_timeout
            nxt.start()
        elif self.cur is None:
            self.idle_since = self.ctx.now
            self.deadline = self.idle_since + self.ctx.idle_timeout

    def serve_static(
        self,
        ex: Exchange,
        entry: AppEntry,
        prefix: bytes,
        rule: StaticRoute,
        bundle: Path,
        path: bytes,
    ) -> None:
        from roost.router.static import serve

        ex.local = True
        serve(self, ex, entry, prefix, rule, bundle, path)

    def _finish(self, linger: bool) -> None:
        """Close once what was written is sent. With `linger`, half-close first
        and discard what the client still sends for a moment: a client still
        sending a body we refused then reads our answer instead of a reset."""
        if self.closed:
            return
        self.closed = True
        t = self.transport
        if linger and t.can_write_eof():
            try:
                t.write_eof()
            except OSError:
                t.close()
                return
            self.lingering = True
            self.deadline = monotonic() + LINGER_S
            if self.paused:
                self.paused = 0
                t.resume_reading()
        else:
            t.close()

    def _log(self, ex: Exchange) -> None:
        ctx = self.ctx
        now = monotonic()
        access = ctx.access
        if access is not None:
            access.log(self, ex, now)
        entry = ex.entry
        ctx.counts.record(entry.label if entry is not None else b"", ex.status, now - ex.t0)

    # ---------------------------------------------------------------- deadlines

    def check(self, now: float) -> None:
        d = self.deadline
        if d and now > d:
            if self.lingering:
                self.transport.close()
                return
            timed_out(self)
            return
        if self.write_paused and now > self.write_deadline:
            log.info("closing a client that stopped reading (%s)", self.peer.decode())
            self.closed = True
            self.transport.abort()
            return
        ex = self.active
        if ex is not None:
            up = ex.up
            if up is not None:
                if up.deadline and now > up.deadline:
                    ex.upstream_timeout(up)
            elif ex.connect_task is not None and now > ex.connect_deadline:
                ex.connect_timeout()
