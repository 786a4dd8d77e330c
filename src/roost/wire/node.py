"""One ZeroMQ context per daemon, with CURVE on every socket and ZAP checking
every peer's public key against the cluster's known keys.

Theory of operation: a server socket (ROUTER, PUB) carries its own keypair and
`curve_server`; libzmq asks the ZAP handler (pyzmq's asyncio authenticator,
running in this process) about every connecting client's public key, and we
allow only keys in `allowed`. A client without a known key never completes the
handshake: it sees silence, and the server logs the refusal. Client sockets
carry this daemon's keypair and the server's public key from `ClusterConfig`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from roost.wire.keys import KeyPair

log = logging.getLogger("roost.wire")

ZAP_DOMAIN = "roost"


class _KeyCheck:
    def __init__(self, allowed: set[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        if not ok:
            log.warning(
                "refused connection from unknown CURVE key %s", key.decode("ascii", "replace")
            )
        return ok


class Node:
    """Sockets for one daemon. Use as an async context manager."""

    def __init__(self, keypair: KeyPair, allowed_keys: Iterable[bytes]) -> None:
        self.keypair = keypair
        self.ctx = zmq.asyncio.Context()
        self._check = _KeyCheck(set(allowed_keys))
        self._auth: AsyncioAuthenticator | None = None

    def allow(self, keys: Iterable[bytes]) -> None:
        self._check.allowed.update(keys)

    async def __aenter__(self) -> Node:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        auth = AsyncioAuthenticator(self.ctx)
        auth.start()
        auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self._check)
        self._auth = auth

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
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
