"""One request/response exchange: routing, local answers, and proxying.

Theory of operation: an `Exchange` is created when a request starts and holds
the app entry and backend it chose for its whole life (route table swaps do
not affect it). Proxying writes the request head as soon as an instance
connection is ready and streams the body as it arrives; until then it is
buffered (bounded: reading from the client pauses). Everything sent is also
kept, up to `replay_bytes`, so that a retry can replay it.

Retry rules: a connection that could not be made is always retried on another
instance (nothing was sent). Once the request was sent, it is retried only if
its method is idempotent, nothing at all came back, and the replay buffer still
holds everything sent. A fresh connection that fails counts against its
instance (passive health, possibly ejecting it); a pooled connection that turns
out dead does not (the instance just closed an idle keep-alive).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from roost.router.balance import Slot, record_success
from roost.router.h1 import FORWARDED, HOP_BY_HOP, IDEMPOTENT, LAST_CHUNK, accepts_gzip, chunk
from roost.router.table import AppEntry
from roost.router.upstream import Upstream, open_upstream

if TYPE_CHECKING:
    from roost.router.client import ClientConnection

log = logging.getLogger("roost.router")


class Exchange:
    # Defaults at class level: an exchange only stores what differs.
    method = b""
    url = b""
    http10 = False
    keep_alive = True
    upgrade = False
    head_done = False
    body_done = False
    host = b""
    rid = b""
    entry: AppEntry | None = None
    slot: Slot | None = None
    slot_held = False
    up: Upstream | None = None
    connect_task: Any = None
    req_chunked = False
    pending_size = 0
    replay_size = 0
    status = 0
    bytes_in = 0
    bytes_out = 0
    attempts = 0
    done = False
    aborted = False
    accept_gzip = False
    expires: int | None = None
    early: list[bytes] | None = None  # tunnel bytes the client sent before the 101
    replayable = True  # everything sent so far is kept in `replay`
    replay: list[bytes] | None = None
    failed: list[Slot] | tuple[()] = ()  # instances that failed this request
    local = False  # answered by the router itself (static file, error page)
    user = b""

    def __init__(self, client: ClientConnection, now: float) -> None:
        self.client = client
        self.t0 = now
        self.headers: list[tuple[bytes, bytes]] = []
        self.hsize = 0
        self.pending: list[bytes] = []

    # ---------------------------------------------------------------- routing

    def start(self) -> None:
        client = self.client
        ctx = client.ctx
        host = b""
        content_length: bytes | None = None
        te: bytes | None = None
        conn: bytes | None = None
        upgrade = b""
        auth: bytes | None = None
        accept_enc = b""
        rid: bytes | None = None
        hosts = 0
        fwd: list[bytes] = [self.method, b" ", self.url, b" HTTP/1.1\r\n"]
        kinds = _KINDS
        for name, value in self.headers:
            kind = kinds.get(name)
            if kind is None:
                kind = _kind(name)
            if kind == _PLAIN:
                fwd += (name, b": ", value, b"\r\n")
            elif kind == _DROP:
                pass
            elif kind == _HOST:
                host = value
                hosts += 1
                fwd += (name, b": ", value, b"\r\n")
            elif kind == _LENGTH:
                content_length = value
                fwd += (name, b": ", value, b"\r\n")
            elif kind == _TE:
                te = value
            elif kind == _CONN:
                conn = value
            elif kind == _UPG:
                upgrade = value
            elif kind == _AUTH:
                auth = value
                fwd += (name, b": ", value, b"\r\n")
            elif kind == _ACCEPT_ENC:
                accept_enc = value
                fwd += (name, b": ", value, b"\r\n")
            elif kind == _RID:
                rid = value
        self.host = host
        if rid is None or not rid or len(rid) > 200 or not rid.isascii():
            rid = ctx.request_id()
        self.rid = rid
        url = self.url
        if url[:1] != b"/":
            target = self._origin_form()
            if target is None:
                return
            url = fwd[2] = target
            host = self.host
        if hosts != 1 and (hosts or not self.http10):
            self.client.local_error(
                self, 400, "Bad request", "The request needs exactly one Host header."
            )
            return
        if te is not None:
            if te.strip().lower() != b"chunked":
                self.client.local_error(
                    self, 501, "Not implemented", "Only chunked transfer coding is supported."
                )
                return
            self.req_chunked = True
            fwd.append(b"Transfer-Encoding: chunked\r\n")
        elif content_length is None or content_length == b"0" or self.upgrade:
            self.body_done = True  # nothing to read: answering locally keeps the connection
        else:
            try:
                size = int(content_length)
            except ValueError:
                size = 0
            if size > ctx.limits.max_body_bytes:
                self.keep_alive = False
                self.client.local_error(
                    self, 413, "Request too large", "The request body is larger than allowed."
                )
                return
        if self.upgrade:
            if self.method == b"CONNECT":
                self.client.local_error(
                    self, 405, "Method not allowed", "CONNECT is not supported."
                )
                return
            # The parser stops at an upgrade request: after a refused upgrade the
            # connection cannot carry another request.
            self.keep_alive = False
        entry = ctx.table.lookup(host)
        if entry is None:
            self.client.unknown_host(self)
            return
        self.entry = entry
        if not entry.plain and not self._features(entry, url, auth, accept_enc):
            return
        if conn is not None and conn not in _PLAIN_CONN:
            fwd = _drop_connection_named(fwd, conn)
        if self.upgrade:
            fwd += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
        fwd += (
            b"X-Forwarded-For: ",
            client.peer,
            b"\r\nX-Forwarded-Proto: ",
            client.scheme,
            b"\r\nX-Forwarded-Host: ",
            host,
            b"\r\nX-Request-Id: ",
            rid,
            b"\r\n\r\n",
        )
        pending = self.pending
        if pending:  # body bytes of a pipelined request are waiting: the head goes first
            pending.insert(0, b"".join(fwd))
        else:
            pending.append(b"".join(fwd))
        self.proxy()

    def _features(self, entry: AppEntry, url: bytes, auth: bytes | None, accept_enc: bytes) -> bool:
        """Suspension, basic auth, static files, expiry, gzip: False when answered here."""
        client = self.client
        if entry.suspended:
            client.local_error(
                self,
                503,
                "This app is suspended",
                "The site is down for maintenance. Please try again later.",
                extra=[(b"Retry-After", b"300")],
            )
            return False
        if entry.auth_tokens and not self._authorized(entry, auth):
            realm = entry.realm.replace('"', "'").encode()
            client.local_error(
                self,
                401,
                "Authorization required",
                "This site is protected by a password.",
                extra=[(b"WWW-Authenticate", b'Basic realm="%s", charset="UTF-8"' % realm)],
            )
            return False
        if entry.static:
            path = url.split(b"?", 1)[0]
            for prefix, rule in entry.static:
                if path.startswith(prefix) or (rule.is_file and path == prefix.rstrip(b"/")):
                    bundle = client.ctx.bundles.get(entry.route.static_bundle)
                    if bundle is not None:
                        client.serve_static(self, entry, prefix, rule, bundle, path)
                        return False
                    break  # bundle not here yet: the app may serve it itself
        if entry.expires:
            self.expires = entry.expires_for(url)
        if entry.gzip and accept_enc:
            self.accept_gzip = accepts_gzip(accept_enc)
        return True

    def _origin_form(self) -> bytes | None:
        """Absolute-form target (`GET http://host/path`): its host wins, path is forwarded."""
        from httptools import HttpParserInvalidURLError, parse_url

        if self.url == b"*" and self.method == b"OPTIONS":
            return b"*"
        try:
            parsed = parse_url(self.url)
        except HttpParserInvalidURLError:
            parsed = None
        if parsed is None or not parsed.host:
            self.client.local_error(self, 400, "Bad request", "The request target is not valid.")
            return None
        path = parsed.path or b"/"
        if parsed.query:
            path += b"?" + parsed.query
        self.host = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
        self.url = path
        return path

    def _authorized(self, entry: AppEntry, auth: bytes | None) -> bool:
        if not auth:
            return False
        scheme, _, token = auth.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        token = token.strip()
        if token in entry.auth_tokens:
            import base64

            try:
                self.user = base64.b64decode(token).split(b":", 1)[0]
            except ValueError:
                self.user = b""
            return True
        return False

    # ---------------------------------------------------------------- proxying

    def proxy(self) -> None:
        ctx = self.client.ctx
        entry = self.entry
        assert entry is not None
        slot = ctx.balancer.choose(entry, ctx.loop.time(), self.failed)
        if slot is None:
            if self.attempts:
                self._bad_gateway()
            else:
                self.client.local_error(
                    self,
                    503,
                    "No instance is running",
                    "This app has no running web instance right now. Please try again shortly.",
                    extra=[(b"Retry-After", b"5")],
                )
            return
        self.attempts += 1
        self.slot = slot
        self.slot_held = True
        slot.outstanding += 1
        idle = slot.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                self.attach(up)
                return
        self.connect_task = ctx.spawn(self._connect(slot))

    async def _connect(self, slot: Slot) -> None:
        try:
            up = await open_upstream(self.client.ctx, slot)
        except Exception as exc:  # refused, unreachable, timeout: the instance failed
            self.connect_task = None
            if not self.aborted:
                self._retry(slot, f"connect failed: {type(exc).__name__}: {exc}", counts=True)
            return
        self.connect_task = None
        if self.aborted:
            up.close()
            return
        self.attach(up)

    def attach(self, up: Upstream) -> None:
        self.up = up
        up.begin(self)
        pending = self.pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self.pending = []
        if self.pending_size:
            self.pending_size = 0
            self.client.resume(4)
        if self.replayable:
            # Keep what was sent until an answer starts, for a retry.
            self.replay = [data]
            self.replay_size = len(data)
            if self.replay_size > self.client.ctx.limits.replay_bytes:
                self.replayable = False
                self.replay = None
        up.transport.write(data)
        if self.client.write_paused:
            up.pause_reading()

    def send_body(self, data: bytes) -> None:
        if self.req_chunked:
            data = chunk(data)
        self._send(data)

    def end_body(self) -> None:
        self.body_done = True
        if self.req_chunked:
            self._send(LAST_CHUNK)

    def _send(self, data: bytes) -> None:
        if self.done or self.local:
            return
        up = self.up
        if up is not None:
            up.transport.write(data)
            if self.replayable and self.replay is not None:
                self.replay_size += len(data)
                if self.replay_size > self.client.ctx.limits.replay_bytes:
                    self.replayable = False
                    self.replay = None
                else:
                    self.replay.append(data)
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > self.client.ctx.limits.buffer_bytes:
                self.client.pause(4)

    def _release_slot(self) -> None:
        if self.slot_held:
            self.slot_held = False
            assert self.slot is not None
            self.slot.outstanding -= 1

    def _retry(self, slot: Slot, why: str, *, counts: bool) -> None:
        """The attempt on `slot` failed before anything came back: try another
        instance if the rules allow (see the module docstring), else 502."""
        self._release_slot()
        ctx = self.client.ctx
        if counts:
            if not self.failed:
                self.failed = []
            self.failed.append(slot)
            if ctx.balancer.failed(slot, ctx.loop.time()):
                app = self.entry.name if self.entry is not None else "?"
                log.warning("ejected instance %s of %s: %s", slot.backend.instance_id, app, why)
        log.info("request %s to %s failed: %s", self.rid.decode(), slot, why)
        if self.attempts >= ctx.limits.max_attempts:
            self._bad_gateway()
            return
        if self.replay is not None:  # it was sent: send it all again
            self.pending = [*self.replay, *self.pending]
            self.replay = None
        self.proxy()

    def _bad_gateway(self) -> None:
        self.client.local_error(
            self,
            502,
            "Bad gateway",
            "The app did not answer properly. If this keeps happening, check its logs.",
        )

    # ---------------------------------------------------------------- upstream events

    def response_complete(self, up: Upstream) -> None:
        slot = up.slot
        record_success(slot)
        self._release_slot()
        self.up = None
        up.release(up.reusable and self.body_done)
        self.done = True
        self.client.exchange_done(self)

    def upstream_lost(self, up: Upstream, exc: Exception | None) -> None:
        """The instance closed before finishing its response."""
        self.up = None
        if up.started:
            self._release_slot()
            self.keep_alive = False
            self.client.abort_response(self, "instance closed mid-response")
            return
        if up.received:
            self._release_slot()
            self._bad_gateway()
            return
        if self.method in IDEMPOTENT and self.replayable:
            self._retry(up.slot, f"closed before answering ({exc})", counts=not up.reused)
        else:
            if not up.reused:
                ctx = self.client.ctx
                ctx.balancer.failed(up.slot, ctx.loop.time())
            self._release_slot()
            self._bad_gateway()

    def upstream_broken(self, up: Upstream, why: str) -> None:
        self.up = None
        up.abort()
        self._release_slot()
        log.warning("request %s: %s", self.rid.decode(), why)
        if up.started:
            self.keep_alive = False
            self.client.abort_response(self, why)
        else:
            self._bad_gateway()

    def upstream_timeout(self, up: Upstream) -> None:
        self.up = None
        up.abort()
        self._release_slot()
        if up.started:
            self.keep_alive = False
            self.client.abort_response(self, "instance went silent mid-response")
        else:
            self.keep_alive = self.keep_alive and self.body_done
            self.client.local_error(
                self,
                504,
                "Gateway timeout",
                "The app took too long to answer.",
            )

    def start_tunnel(self, up: Upstream, rest: bytes) -> None:
        """101 Switching Protocols: from now on bytes flow through untouched."""
        up.tunnel = True
        up.deadline = 0.0
        self._release_slot()
        record_success(up.slot)
        if rest:
            self.client.transport.write(rest)
        self.client.start_tunnel(self, up)

    def tunnel_closed(self) -> None:
        self.client.transport.close()

    def abort(self) -> None:
        """The client went away: stop whatever is in flight."""
        if self.aborted:
            return
        self.aborted = True
        task = self.connect_task
        if task is not None:
            task.cancel()
            self.connect_task = None
        up = self.up
        if up is not None:
            self.up = None
            up.close()
        self._release_slot()


_PLAIN_CONN = frozenset(
    {
        b"keep-alive",
        b"close",
        b"upgrade",
        b"Keep-Alive",
        b"Close",
        b"Upgrade",
        b"keep-alive, Upgrade",
    }
)

# What the request header loop does with each header name: one dict probe per
# header (raw names are cached as seen; their case varies by client).
_PLAIN, _DROP, _HOST, _LENGTH, _TE, _CONN, _UPG, _AUTH, _ACCEPT_ENC, _RID = range(10)
_SPECIAL = {
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"upgrade": _UPG,
    b"authorization": _AUTH,
    b"accept-encoding": _ACCEPT_ENC,
    b"x-request-id": _RID,
    **{
        name: _DROP
        for name in (HOP_BY_HOP | FORWARDED) - {b"transfer-encoding", b"connection", b"upgrade"}
    },
}
_KINDS: dict[bytes, int] = {}


def _kind(name: bytes) -> int:
    kind = _SPECIAL.get(name.lower(), _PLAIN)
    if len(_KINDS) > 4096:
        _KINDS.clear()  # bounded: clients may invent any header names
    _KINDS[name] = kind
    return kind


def _drop_connection_named(fwd: list[bytes], conn: bytes) -> list[bytes]:
    named = {t.strip().lower() for t in conn.split(b",")} - {
        b"keep-alive",
        b"close",
        b"upgrade",
        b"",
    }
    if not named:
        return fwd
    out = fwd[:4]
    i = 4
    while i < len(fwd):
        if fwd[i + 1] == b": " and fwd[i].lower() in named:
            i += 4
            continue
        out += fwd[i : i + 4]
        i += 4
    return out
