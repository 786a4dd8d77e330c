"""One request/response exchange: what a request asks for and who answers it.

An `Exchange` is created when a request starts and holds the app entry it
routed to for its whole life (route table swaps do not affect it). `start`
reads the request head once: it picks out the headers the router acts on,
builds the head to forward (hop-by-hop and forged X-Forwarded-* headers
dropped, the router's own added), then answers locally (unknown host, limits,
suspended app, basic auth, static files) or hands over to `Relay` (relay.py)
to proxy it to an instance.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from roost.router import acme
from roost.router.acme import PREFIX as ACME_PREFIX
from roost.router.clienterror import local_error, unknown_host
from roost.router.h1 import FORWARDED, HOP_BY_HOP, accepts_gzip
from roost.router.relay import Relay
from roost.router.table import AppEntry

if TYPE_CHECKING:
    from roost.router.client import ClientConnection

log = logging.getLogger("roost.router")


class Exchange(Relay):
    __slots__ = (
        "accept_gzip",
        "agent",
        "bytes_in",
        "bytes_out",
        "early",
        "expires",
        "head_done",
        "headers",
        "host",
        "http10",
        "referer",
        "status",
        "t0",
        "upgrade",
        "url",
        "user",
        "version_known",
    )

    def __init__(self, client: ClientConnection, now: float, url: bytes = b"") -> None:
        self._setup(client, now, url)
        self.headers: list[bytes] = []  # flat: name, value, name, value...

    def _setup(self, client: ClientConnection, now: float, url: bytes) -> None:
        """Every field's first value but `headers` (for `__init__` and
        `new_exchange`: the lane's exchange never reads a header list, and the
        plain path brings its own, so neither makes one to drop)."""
        self.client = client
        self.t0 = now
        self.url = url
        self.pending = []
        self.method = b""
        self.http10 = False
        self.version_known = False  # http10 is settled (else start() settles it)
        self.keep_alive = True
        self.upgrade = False
        self.head_done = False
        self.body_done = False
        self.host = b""
        self.rid = b""
        self.entry = None
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.done = False
        self.aborted = False
        self.accept_gzip = False
        self.expires: int | None = None
        self.early: list[bytes] | None = None  # tunnel bytes the client sent before the 101
        self.local = False  # answered by the router itself (static file, error page)
        self.user = b""
        self.referer = b"-"
        self.agent = b"-"
        self.slot = None
        self.slot_held = False
        self.up = None
        self.connect_task = None
        self.connect_deadline = 0.0
        self.req_chunked = False
        self.pending_size = 0
        self.replay_size = 0
        self.attempts = 0
        self.replayable = True
        self.replay_head = None
        self.replay = None
        self.failed = ()

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
        dropped = False  # a hop-by-hop header went (Proxy-Connection counts for the version)
        fwd: list[bytes] = [self.method, b" ", self.url, b" HTTP/1.1\r\n"]
        kinds = _KINDS
        headers = self.headers
        for i in range(0, len(headers), 2):
            name = headers[i]
            value = headers[i + 1]
            kind = kinds.get(name, -1)
            if kind < 0:
                kind = _kind(name)
            if kind == _PLAIN:
                _add(fwd, name, value)
            elif kind == _DROP:
                dropped = True
            elif kind == _HOST:
                host = value
                hosts += 1
                _add(fwd, name, value)
            elif kind == _LENGTH:
                content_length = value
                _add(fwd, name, value)
            elif kind == _TE:
                te = value
            elif kind == _CONN:
                conn = value
            elif kind == _UPG:
                upgrade = value
            elif kind == _AUTH:
                auth = value
                _add(fwd, name, value)
            elif kind == _ACCEPT_ENC:
                accept_enc = value
                _add(fwd, name, value)
            elif kind == _RID:
                rid = value
            elif kind == _REFERER:
                self.referer = value
                _add(fwd, name, value)
            else:  # _AGENT
                self.agent = value
                _add(fwd, name, value)
        if not self.version_known and (conn is not None or dropped or not self.keep_alive):
            # HTTP/1.0 keeps a connection only when a Connection (or
            # Proxy-Connection) header asks, so a keep-alive request without
            # one is 1.1; otherwise ask the parser (still on this request),
            # which costs a string format.
            self.http10 = self.client.parser.get_http_version() != "1.1"
        self.host = host
        if rid is None or not rid or len(rid) > 200 or not rid.isascii():
            rid = ctx.request_id()
        self.rid = rid
        url = self.url
        if url[0] != 47:  # not "/...": absolute-form (or "*")
            target = self._origin_form()
            if target is None:
                return
            url = fwd[2] = target
            host = self.host
        if hosts != 1 and (hosts or not self.http10):
            local_error(
                self.client, self, 400, "Bad request", "The request needs exactly one Host header."
            )
            return
        if te is not None:
            if te.strip().lower() != b"chunked":
                local_error(
                    self.client,
                    self,
                    501,
                    "Not implemented",
                    "Only chunked transfer coding is supported.",
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
            if size > ctx.max_body_bytes:
                self.keep_alive = False
                local_error(
                    self.client,
                    self,
                    413,
                    "Request too large",
                    "The request body is larger than allowed.",
                )
                return
        if self.upgrade:
            if self.method == b"CONNECT":
                local_error(
                    self.client, self, 405, "Method not allowed", "CONNECT is not supported."
                )
                return
            # The parser stops at an upgrade request: after a refused upgrade the
            # connection cannot carry another request.
            self.keep_alive = False
        entry = ctx.host_cache.get(host, _MISS)
        if entry is _MISS:
            entry = ctx.table.lookup(host)
        if entry is None:
            unknown_host(self.client, self)
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
        """ACME answers, suspension, basic auth, static files, expiry, gzip: False
        when answered here."""
        client = self.client
        challenges = entry.route.acme_challenges
        if challenges and url.startswith(ACME_PREFIX) and acme.serve(client, self, challenges, url):
            return False  # before auth or suspension: the CA has neither
        if entry.suspended:
            local_error(
                client,
                self,
                503,
                "This app is suspended",
                "The site is down for maintenance. Please try again later.",
                extra=[(b"Retry-After", b"300")],
            )
            return False
        if entry.auth_tokens and not self._authorized(entry, auth):
            realm = entry.realm.replace('"', "'").encode()
            local_error(
                client,
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
            local_error(self.client, self, 400, "Bad request", "The request target is not valid.")
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


def new_exchange(client: ClientConnection, now: float, url: bytes) -> Exchange:
    """Exchange(client, now, url) for the plain lane and the plain path, less
    its header list (the caller sets `headers` if it reads any): compiled, a
    class call goes through the generic call protocol and parses its arguments
    (about 5% of the lane's user time, measured); this makes the object
    directly."""
    ex = Exchange.__new__(Exchange)
    ex._setup(client, now, url)
    return ex


_MISS: Any = object()
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
_PLAIN, _DROP, _HOST, _LENGTH, _TE, _CONN, _UPG, _AUTH, _ACCEPT_ENC, _RID, _REFERER, _AGENT = range(
    12
)
_SPECIAL = {
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"upgrade": _UPG,
    b"authorization": _AUTH,
    b"accept-encoding": _ACCEPT_ENC,
    b"x-request-id": _RID,
    b"referer": _REFERER,  # (kept for the access log)
    b"user-agent": _AGENT,
    **{
        name: _DROP
        for name in (HOP_BY_HOP | FORWARDED) - {b"transfer-encoding", b"connection", b"upgrade"}
    },
}
_KINDS: dict[bytes, int] = {}


def _add(fwd: list[bytes], name: bytes, value: bytes) -> None:
    """One header line onto the head being built (appends: no tuple per header)."""
    fwd.append(name)
    fwd.append(b": ")
    fwd.append(value)
    fwd.append(b"\r\n")


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
