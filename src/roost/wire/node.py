"""One ZeroMQ context per daemon, with CURVE on every socket and ZAP checking
every peer's public key against the cluster's known keys.

Theory of operation: a server socket (ROUTER, PUB) carries its own keypair and
`curve_server`; libzmq asks the ZAP handler (an asyncio task of the Node,
running in this process) about every connecting client's public key, and we
allow only keys in `allowed`. A client without a known key never completes the
handshake: it sees silence, and the server logs the refusal. Client sockets
carry this daemon's keypair and the server's public key from `ClusterConfig`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import zmq
import zmq.asyncio
from zmq.utils import z85

from roost.wire.keys import KeyPair

log = logging.getLogger("roost.wire")

ZAP_DOMAIN = "roost"


class Node:
    """Sockets for one daemon. Use as an async context manager."""

    def __init__(self, keypair: KeyPair, allowed_keys: Iterable[bytes]) -> None:
        self.keypair = keypair
        self.ctx = zmq.asyncio.Context()
        self.allowed: set[bytes] = set(allowed_keys)
        self._zap: zmq.asyncio.Socket | None = None
        self._zap_task: asyncio.Task[None] | None = None

    def allow(self, keys: Iterable[bytes]) -> None:
        self.allowed.update(keys)

    async def __aenter__(self) -> Node:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Serve ZAP (RFC 27) requests for this context's server sockets.

        Our own handler rather than pyzmq's authenticator: that one closes its
        socket before its cancelled poll has unwound, and a later context in
        the same process can reuse the file descriptor and lose its reader.
        """
        zap = self.ctx.socket(zmq.REP)
        zap.linger = 0
        zap.bind("inproc://zeromq.zap.01")
        self._zap = zap
        self._zap_task = asyncio.get_running_loop().create_task(self._serve_zap(zap))

    async def _serve_zap(self, zap: zmq.asyncio.Socket) -> None:
        while True:
            frames = await zap.recv_multipart()
            version, request_id = [*frames, b"", b""][:2]
            status, text = b"400", b"refused"
            if version != b"1.0" or len(frames) < 6:
                text = b"malformed ZAP request"
            elif frames[5] != b"CURVE" or len(frames) < 7 or len(frames[6]) != 32:
                text = b"CURVE required"
            else:
                key = z85.encode(frames[6])
                if key in self.allowed:
                    status, text = b"200", b"OK"
                else:
                    address = frames[3].decode("ascii", "replace")
                    log.warning(
                        "refused connection from %s with unknown CURVE key %s",
                        address,
                        key.decode("ascii", "replace"),
                    )
                    text = b"unknown key"
            await zap.send_multipart([b"1.0", request_id, status, text, b"", b""])

    async def aclose(self) -> None:
        if self._zap_task is not None:
            self._zap_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._zap_task
            self._zap_task = None
        if self._zap is not None:
            self._zap.close(linger=0)
            self._zap = None
        self.ctx.destroy(linger=0)

    def close(self) -> None:
        """Synchronous close for code outside a running loop (prefer aclose)."""
        if self._zap_task is not None:
            self._zap_task.cancel()
            self._zap_task = None
        if self._zap is not None:
            self._zap.close(linger=0)
            self._zap = None
        self.ctx.destroy(linger=0)

    def _common(self, sock: zmq.asyncio.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        # ZMTP heartbeats detect dead peers on idle connections.
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.MAXMSGSIZE, 512 * 1024 * 1024)

    def server_socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
        self._common(sock)
        sock.curve_secretkey = self.keypair.secret
        sock.curve_publickey = self.keypair.public
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN.encode()
        return sock

    def client_socket(self, kind: int, server_key: str | bytes) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
        self._common(sock)
        sock.curve_secretkey = self.keypair.secret
        sock.curve_publickey = self.keypair.public
        sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key
        return sock
