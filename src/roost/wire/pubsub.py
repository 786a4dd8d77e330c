"""Publish/subscribe with sequence numbers so subscribers detect gaps.

Frames: [topic, seq (8 bytes big-endian), payload]. A subscriber that sees a
sequence jump knows it missed messages (slow joiner, reconnect, HWM drop) and
must resync through its role's snapshot request; `Subscriber.recv` reports
that as `gap=True`.

Roles (`roost.wire.authz`): a publisher admits at the handshake only peers of
the roles that read publications (routers: route tables carry TLS keys), and
a subscriber connects only to publishers whose key belongs to a role that may
publish its topics (a runner cannot feed routers a route table).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import zmq
import zmq.asyncio

from roost.wire.authz import publishers_of, readers_of_any
from roost.wire.cluster import Endpoint
from roost.wire.codec import BadMessage, decode, encode
from roost.wire.messages import Msg
from roost.wire.node import Node

log = logging.getLogger("roost.wire.pubsub")


class Publisher:
    def __init__(self, node: Node, bind: str, readers: Collection[str] | None = None) -> None:
        readers = readers_of_any() if readers is None else readers
        self.sock = node.server_socket(zmq.PUB, roles=readers)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.bind(bind)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._seq: dict[str, int] = {}

    async def publish(self, topic: str, msg: Msg) -> None:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        await self.sock.send_multipart([topic.encode(), seq.to_bytes(8, "big"), encode(msg)])

    def close(self) -> None:
        self.sock.close(linger=0)


class Subscriber:
    """Subscribes to the same topics on every publisher endpoint."""

    def __init__(self, node: Node, endpoints: Sequence[Endpoint], topics: Sequence[str]) -> None:
        # Checked before any socket exists: a refused endpoint is a bad
        # cluster.json, said at once rather than a feed that never arrives.
        if node.checks_roles:
            may = publishers_of(tuple(topics))
            for ep in endpoints:
                who = node.identity_of(ep.public_key)
                if who is None or who.role not in may:
                    raise ValueError(
                        f"{ep.address}: key {ep.public_key} is "
                        f"{'not a known peer' if who is None else who} and may not "
                        f"publish {', '.join(topics)} (only {', '.join(sorted(may)) or 'nobody'})"
                    )
        # One socket per publisher: CURVE needs each server's own key.
        self._poller = zmq.asyncio.Poller()
        self._socks: list[zmq.asyncio.Socket] = []
        self._last: dict[tuple[int, bytes], int] = {}
        for ep in endpoints:
            sock = node.client_socket(zmq.SUB, ep.public_key)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            for t in topics:
                sock.setsockopt(zmq.SUBSCRIBE, t.encode())
            sock.connect(ep.address)
            self._socks.append(sock)
            self._poller.register(sock, zmq.POLLIN)

    async def recv(self, timeout: float | None = None) -> list[tuple[str, Msg, bool]]:
        """Messages ready now as (topic, msg, gap); [] on timeout."""
        events = await self._poller.poll(None if timeout is None else int(timeout * 1000))
        out: list[tuple[str, Msg, bool]] = []
        for sock, _ in events:
            frames = await sock.recv_multipart()
            if len(frames) != 3 or len(frames[1]) != 8:
                log.warning("dropped malformed publication")
                continue
            idx = self._socks.index(sock)
            seq = int.from_bytes(frames[1], "big")
            key = (idx, frames[0])
            prev = self._last.get(key)
            self._last[key] = seq
            gap = prev is None or seq != prev + 1
            try:
                msg = decode(frames[2])
            except BadMessage as exc:
                log.warning("dropped malformed publication: %s", exc)
                continue
            out.append((frames[0].decode(), msg, gap))
        return out

    def close(self) -> None:
        for s in self._socks:
            s.close(linger=0)
