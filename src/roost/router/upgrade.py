"""HTTP Upgrade (WebSocket and the like) on a client connection.

httptools stops at a request that asks to upgrade: the bytes after its head
already belong to the new protocol. They are held on the exchange (`early`,
at most EARLY_LIMIT, since the instance has not agreed yet) while it goes to
an instance. If the instance answers 101 the connection becomes a tunnel
(`start_tunnel`): the held bytes go first, then every read goes to the
instance untouched (`ClientConnection.data_received`). Any other answer ends
the connection, which cannot carry another request after an upgrade request.

Once per upgraded connection, so plain Python beside the compiled
`client.py` (native.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.router.client import ClientConnection
    from roost.router.exchange import Exchange
    from roost.router.upstream import Upstream

EARLY_LIMIT = 1 << 20


def requested(client: ClientConnection, data: bytes, head_end: int) -> None:
    """The parser stopped at an upgrade request's head, `head_end` into `data`."""
    active = client.active
    ex = active if active is not None and active.upgrade else None
    if ex is None or ex.done:
        # Upgrade already answered (e.g. 404): nothing more to read.
        client.pause(1)
        return
    ex.early = [data[head_end:]]
    client.upgrading = ex


def hold(client: ClientConnection, ex: Exchange, data: bytes) -> None:
    """Bytes read while `ex`'s upgrade waits for the instance's answer."""
    assert ex.early is not None
    ex.early.append(data)
    if sum(map(len, ex.early)) > EARLY_LIMIT:
        client.transport.close()


def start_tunnel(client: ClientConnection, ex: Exchange, up: Upstream) -> None:
    """The instance answered 101: from now on bytes flow through untouched."""
    client.tunnel = up
    client.upgrading = None
    client.deadline = 0.0
    client.resume(1 | 2 | 4)
    early = ex.early or []
    ex.early = None
    for chunk in early:
        if chunk:
            up.write(chunk)
    client._log(ex)
