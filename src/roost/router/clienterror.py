"""When a request on a client connection fails: the router's own error pages,
refused requests, timeouts and responses cut short.

These are the rare paths of `client.ClientConnection`, kept out of the
compiled request path (native.py): plain Python, called with the connection
(whose fields the compiled build declares `public`, so they read and write
the same either way). A request the router answers itself still counts and
is logged like any other (`ClientConnection.exchange_done`).

An answer already on its way cannot be followed by another: a failure then
cuts the connection (`abort_response`) rather than interleave two
responses. A refused request ends its connection after the answer, half-
closed first (`ClientConnection._finish`, lingering) so that a client still
sending a body reads the answer instead of a reset.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

from httptools import HttpParserCallbackError, HttpParserError

from roost.router.context import monotonic
from roost.router.h1 import error_response

if TYPE_CHECKING:
    from roost.router.client import ClientConnection
    from roost.router.exchange import Exchange

log = logging.getLogger("roost.router")


class Reject(Exception):
    """Raised by a parser callback: the request is refused with this answer."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message


def local_error(
    client: ClientConnection,
    ex: Exchange,
    status: int,
    title: str,
    message: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer `ex` with the router's own error page."""
    ex.status = status
    ex.local = True
    if not ex.body_done and ex.head_done:
        # We will not read the rest of the body: the connection cannot be reused.
        ex.keep_alive = False
    data = error_response(
        status,
        title,
        message,
        request_id=ex.rid,
        keep_alive=ex.keep_alive and not client.closed,
        head_only=ex.method == b"HEAD",
        extra=extra,
        http10=ex.http10,
    )
    ex.bytes_out = len(data)
    ex.done = True
    if not client.closed:
        client.write(data)
    client.exchange_done(ex)


def unknown_host(client: ClientConnection, ex: Exchange) -> None:
    host = html.escape(ex.host.decode("latin-1")) or "(none)"
    local_error(
        client,
        ex,
        404,
        "No such app",
        f"No app is configured to answer for <b>{host}</b>. Check the address, or the "
        "app's domains.",
    )


def abort_response(client: ClientConnection, ex: Exchange, why: str) -> None:
    """Cut the connection: `ex`'s answer cannot be completed."""
    log.warning("request %s aborted: %s", ex.rid.decode(), why)
    ex.abort()
    if not ex.done:
        ex.done = True
        client._log(ex)
    if client.active is ex:
        client.active = None
    if not client.closed:
        client.closed = True
        client.transport.close()


def parse_failed(client: ClientConnection, exc: HttpParserError) -> None:
    """The parser refused the bytes read (not HTTP), or a callback refused the
    request (`Reject`, or a bug in one: a 500, with its traceback logged)."""
    if isinstance(exc, HttpParserCallbackError):
        cause = exc.__context__
        if isinstance(cause, Reject):
            reject(client, cause.status, cause.title, cause.message)
        else:
            log.error("router bug while parsing a request", exc_info=cause)
            reject(client, 500, "Internal error", "The router failed on this request.")
        return
    reject(client, 400, "Bad request", f"The request is not valid HTTP ({exc}).")


def reject(client: ClientConnection, status: int, title: str, message: str) -> None:
    """The request being parsed is refused; the connection ends after the answer."""
    # (Here, not at the top: exchange.py imports this module.)
    from roost.router.exchange import Exchange

    active = client.active
    if active is not None and (
        active is not client.cur or (active.up is not None and active.up.started) or active.done
    ):
        # An answer is already on its way: another one now would interleave. Cut.
        abort_response(client, active, title)
        return
    ex = client.cur or Exchange(client, monotonic())
    ex.abort()
    ex.keep_alive = False
    client.queue.clear()
    client.active = ex
    local_error(client, ex, status, title, message)
    client._finish(linger=True)


def timed_out(client: ClientConnection) -> None:
    """The connection's deadline passed (`ClientConnection.check`)."""
    client.deadline = 0.0
    cur, active = client.cur, client.active
    if cur is None and active is None:
        client.closed = True
        client.transport.close()  # idle keep-alive: a quiet goodbye
        return
    if active is None or (active.up is None or not active.up.started):
        if active is not None:
            active.abort()
        reject(client, 408, "Request timeout", "The request took too long to arrive.")
        return
    abort_response(client, active, "client too slow")
