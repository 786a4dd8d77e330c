"""One HTTP GET on asyncio and h11: what `roost up`'s readiness probes ask.

Why not httpx, as the rest of the CLI: `roost up` runs as long as the
platform, and what it imports stays resident. Probing with httpx clients
imported anyio and httpcore and loaded the CA bundle into a new TLS context
per client (a plain-HTTP API too): 30 probes grew a process that had
already imported httpx by 3.8 MB (issue 21). A probe needs one request on
one connection, closed after, so h11 (which httpx itself uses) parses the
answer and asyncio carries it.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import h11

MAX_BODY = 16 << 20


class GetError(OSError):
    """The server's answer was not HTTP, or too large."""


async def get(
    url: str,
    verify: ssl.SSLContext | bool = True,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """GET `url`: its status and body. `verify` as httpx's (a context, or
    whether to check the server's certificate); OSError (TimeoutError among
    them) when there is no answer within `timeout`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls: ssl.SSLContext | None = None
    if parts.scheme == "https":
        if isinstance(verify, ssl.SSLContext):
            tls = verify
        else:
            tls = ssl.create_default_context()
            if not verify:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
    port = parts.port or (443 if tls is not None else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rsplit("@", 1)[-1]
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=tls)
        try:
            return await _exchange(reader, writer, host, target, headers or {})
        finally:
            writer.close()


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    target: str,
    headers: dict[str, str],
) -> tuple[int, bytes]:
    conn = h11.Connection(our_role=h11.CLIENT)
    fields = [("Host", host), ("Connection", "close"), *headers.items()]
    writer.write(conn.send(h11.Request(method="GET", target=target, headers=fields)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()
    status, body = 0, bytearray()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise GetError(f"an answer over {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError as exc:
        raise GetError(f"not an HTTP answer: {exc}") from None
    if not status:
        raise GetError("the connection closed before an answer")
    return status, bytes(body)
