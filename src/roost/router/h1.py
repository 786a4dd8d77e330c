"""HTTP/1.1 bytes the proxy writes: status lines, hop-by-hop rules, framing,
local responses and their pages. Pure functions over bytes.
"""

from __future__ import annotations

import html
import time
from email.utils import formatdate
from http import HTTPStatus

# Headers that describe one connection, not the message (RFC 9110 7.6.1); the
# proxy never forwards them, and sets its own framing and connection handling.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Set by the router itself; a client's own values would be forgeries.
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip"})

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

NO_BODY_STATUS = frozenset({204, 304})

_status_lines: dict[int, bytes] = {}


def status_line(code: int) -> bytes:
    line = _status_lines.get(code)
    if line is None:
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Unknown"
        line = _status_lines[code] = f"HTTP/1.1 {code} {phrase}\r\n".encode()
    return line


def reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


class HttpDate:
    """The current IMF-fixdate, recomputed at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


http_date = HttpDate()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def accepts_gzip(accept_encoding: bytes) -> bool:
    """True when `gzip` is acceptable (present and not q=0)."""
    for item in accept_encoding.lower().split(b","):
        name, _, params = item.strip().partition(b";")
        if name.strip() in (b"gzip", b"*"):
            params = params.replace(b" ", b"")
            if params.startswith(b"q="):
                try:
                    return float(params[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{code} {title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;
color:#222}}
h1{{font-size:1.6em}} small{{color:#777}}</style></head>
<body><h1>{title}</h1><p>{message}</p>
<p><small>{code} {phrase} &middot; roost router{rid}</small></p></body></html>
"""


def page(code: int, title: str, message: str, request_id: bytes = b"") -> bytes:
    rid = f" &middot; request {html.escape(request_id.decode('latin-1'))}" if request_id else ""
    return _PAGE.format(
        code=code,
        title=html.escape(title),
        message=message,  # trusted: written by us, may hold markup
        phrase=html.escape(reason(code)),
        rid=rid,
    ).encode()


def response_head(
    code: int,
    headers: list[tuple[bytes, bytes]],
    *,
    content_length: int | None,
    keep_alive: bool,
    http10: bool = False,
) -> bytes:
    parts = [status_line(code), b"Date: ", http_date.now(), b"\r\nServer: roost\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if content_length is not None:
        parts += (b"Content-Length: ", str(content_length).encode(), b"\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def error_response(
    code: int,
    title: str,
    message: str,
    *,
    request_id: bytes,
    keep_alive: bool,
    head_only: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
    http10: bool = False,
) -> bytes:
    body = page(code, title, message, request_id)
    headers = [(b"Content-Type", b"text/html; charset=utf-8"), (b"Cache-Control", b"no-store")]
    if request_id:
        headers.append((b"X-Request-Id", request_id))
    if extra:
        headers += extra
    head = response_head(
        code, headers, content_length=len(body), keep_alive=keep_alive, http10=http10
    )
    return head if head_only else head + body
