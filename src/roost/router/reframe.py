"""Relaying a response whose body must change on the way: on-the-fly gzip
(`[http] gzip` and a client that accepts it), or an HTTP/1.0 client (no chunked
encoding: the body is sent decoded and the connection closes at its end).

The parser reports every header and body piece here; the head is rebuilt from
parsed headers (hop-by-hop ones dropped) and the body re-framed. Slower than
the pass-through path in `upstream.py`, so used only when needed.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from roost.router.h1 import HOP_BY_HOP, LAST_CHUNK, NO_BODY_STATUS

if TYPE_CHECKING:
    from roost.router.exchange import Exchange
    from roost.router.upstream import Upstream

_COMPRESSIBLE = (b"text/", b"application/json", b"application/javascript", b"application/xml")
_COMPRESSIBLE_SUFFIX = (b"+json", b"+xml")


def compressible(content_type: bytes) -> bool:
    ct = content_type.split(b";", 1)[0].strip().lower()
    return ct.startswith(_COMPRESSIBLE) or ct.endswith(_COMPRESSIBLE_SUFFIX)


class Reframer:
    def __init__(self, up: Upstream, ex: Exchange) -> None:
        self.up = up
        self.ex = ex
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim = False
        self.chunked_out = False
        self.gz: zlib._Compress | None = None

    def on_message_begin(self) -> None:
        if self.up.complete:
            self.up.broken = True
        self.headers = []
        self.reason = b""

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        up, ex = self.up, self.ex
        code = up.parser.get_status_code()
        if code < 200 and code != 101:
            self.interim = True
            if not ex.http10:  # HTTP/1.0 clients do not know interim responses
                up.out.append(self._head(code, interim=True))
            return
        self.interim = False
        up.started = True
        ex.status = code
        up.out.append(self._head(code))
        if ex.method == b"HEAD" and code != 101:
            up.reusable = up.parser.should_keep_alive()
            up.complete = True
            from httptools import HttpResponseParser

            up.parser = HttpResponseParser(Reframer(up, ex))

    def on_body(self, body: bytes) -> None:
        up = self.up
        if up.complete or self.interim:
            return
        if self.gz is not None:
            body = self.gz.compress(body)
            if not body:
                return
        self.ex.bytes_out += len(body)
        if self.chunked_out:
            up.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            up.out.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        up = self.up
        if up.complete:
            return
        self.finish()
        up.reusable = up.parser.should_keep_alive()
        up.complete = True

    def finish(self) -> None:
        """The body ended (message complete, or EOF for a close-delimited one)."""
        up = self.up
        if self.gz is not None:
            tail = self.gz.flush()
            self.gz = None
            if tail:
                self.ex.bytes_out += len(tail)
                up.out.append(b"%x\r\n%s\r\n" % (len(tail), tail) if self.chunked_out else tail)
        if self.chunked_out:
            up.out.append(LAST_CHUNK)

    def _head(self, code: int, interim: bool = False) -> bytes:
        ex = self.ex
        parts = [b"HTTP/1.1 %d %s\r\n" % (code, self.reason or b"-")]
        chunked = has_length = has_rid = has_cache = encoded = False
        content_type = b""
        named: set[bytes] = set()
        kept: list[tuple[bytes, bytes]] = []
        for name, value in self.headers:
            ln = name.lower()
            if ln in HOP_BY_HOP:
                if ln == b"transfer-encoding":
                    chunked = value.lower().rstrip().endswith(b"chunked")
                elif ln == b"connection":
                    named.update(t.strip().lower() for t in value.split(b","))
                elif ln == b"upgrade" and code == 101:
                    kept.append((name, value))
                continue
            if ln == b"content-length":
                has_length = True
            elif ln == b"x-request-id":
                has_rid = True
            elif ln in (b"cache-control", b"expires"):
                has_cache = True
            elif ln == b"content-encoding":
                encoded = True
            elif ln == b"content-type":
                content_type = value
            kept.append((name, value))
        named -= {b"close", b"keep-alive", b"upgrade"}
        no_body = ex.method == b"HEAD" or code in NO_BODY_STATUS or code == 101
        gzip = (
            not interim
            and not no_body
            and ex.accept_gzip
            and not encoded
            and code == 200
            and compressible(content_type)
        )
        for name, value in kept:
            ln = name.lower()
            if ln in named or (gzip and ln in (b"content-length", b"etag")):
                continue
            parts += (name, b": ", value, b"\r\n")
        if interim:
            parts.append(b"\r\n")
            return b"".join(parts)
        if not has_rid:
            parts += (b"X-Request-Id: ", ex.rid, b"\r\n")
        if ex.expires is not None and not has_cache:
            from roost.router.upstream import expires_headers

            parts.append(expires_headers(ex.expires))
        if code == 101:
            parts.append(b"Connection: Upgrade\r\n\r\n")
            return b"".join(parts)
        keep = ex.keep_alive
        if not no_body:
            if gzip:
                self.gz = zlib.compressobj(6, zlib.DEFLATED, 31)
                parts.append(b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n")
                has_length = False
                chunked = True
            if chunked or not has_length:
                self.up.until_close = not chunked
                if ex.http10:
                    keep = False  # no chunking in HTTP/1.0: the body ends when we close
                else:
                    self.chunked_out = True
                    parts.append(b"Transfer-Encoding: chunked\r\n")
        if not keep:
            ex.keep_alive = False
            parts.append(b"Connection: close\r\n")
        elif ex.http10:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)
