"""Answering ACME HTTP-01 challenges for an app's domains, before its instances.

The controller ordering a certificate publishes each pending answer (token
and key authorization) in the app's route (`AppRoute.acme_challenges`), so
every router answers for every pending challenge, whichever the CA asks. An
app with pending answers is not `plain` (table.py), so the request path
looks here only then: `GET /.well-known/acme-challenge/TOKEN` for a token of
ours is answered by the router; any other token goes to the app as usual (it
may be running its own ACME client), as does every other path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from roost.router.h1 import response_head

if TYPE_CHECKING:
    from roost.router.client import ClientConnection
    from roost.router.exchange import Exchange

PREFIX = b"/.well-known/acme-challenge/"


def answer_for(challenges: dict[str, str], method: bytes, url: bytes) -> bytes | None:
    """The body to answer `method url` with, or None when it is not ours."""
    if method not in (b"GET", b"HEAD") or not url.startswith(PREFIX):
        return None
    token = url[len(PREFIX) :].split(b"?", 1)[0]
    try:
        answer = challenges.get(token.decode("ascii"))
    except UnicodeDecodeError:
        return None
    return answer.encode("ascii") if answer is not None else None


def serve(client: ClientConnection, ex: Exchange, challenges: dict[str, str], url: bytes) -> bool:
    """Answer the challenge `url` asks for; False when it is not ours."""
    body = answer_for(challenges, ex.method, url)
    if body is None:
        return False
    ex.local = True
    head = response_head(
        200,
        [
            (b"Content-Type", b"text/plain"),
            (b"Cache-Control", b"no-store"),
            (b"X-Request-Id", ex.rid),
        ],
        content_length=len(body),
        keep_alive=ex.keep_alive,
        http10=ex.http10,
    )
    ex.status = 200
    ex.bytes_out = 0 if ex.method == b"HEAD" else len(body)
    ex.done = True
    if not client.closed:
        client.write(head if ex.method == b"HEAD" else head + body)
    client.exchange_done(ex)
    return True
