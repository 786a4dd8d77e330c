"""One ZeroMQ context per daemon, with CURVE on every socket and ZAP checking
every peer's public key against the cluster's known keys.

Theory of operation: a server socket (ROUTER, PUB) carries its own keypair and
`curve_server`; libzmq asks the ZAP handler (an asyncio task of the Node,
running in this process) about every connecting client's public key, and we
allow only keys in `allowed`. A client without a known key never completes the
handshake: it sees silence, and the server logs the refusal. Client sockets
carry this daemon's keypair and the server's public key from `ClusterConfig`.

A daemon's Node knows every admitted key's identity (`peers`: role and host,
from DATA/keys/peers.json). ZAP answers with that identity as the User-Id,
which libzmq attaches to every message received on the connection; the RPC
server reads it back (`caller`) to check what the sender may ask. A server
socket may also admit only some roles (`server_socket(roles=...)`, carried in
its ZAP domain), as the route publisher admits only routers.

A Node built from bare keys (no identities: in-process tests and pure
clients) has no roles to check: its ZAP gives no User-Id, and its servers take
any admitted key's requests. Daemons always get identities (`open_node`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar, cast, overload

import zmq
import zmq.asyncio
from zmq.utils import z85

from roost.wire.identity import Identity, check_peers
from roost.wire.keys import KeyPair
from roost.wire.version import handshake_metadata

log = logging.getLogger("roost.wire")

ZAP_DOMAIN = "roost"

S = TypeVar("S", bound=zmq.Socket)


class Caller(NamedTuple):
    """Who sent a message: the identity ZAP gave its connection, and its key."""

    identity: Identity
    key: str  # z85 public key


class Node:
    """Sockets for one daemon. Use as an async context manager.

    `allowed_keys`: the keys to admit, as a map to their identities (a
    daemon's peers) or bare (no roles known: see the module docstring).
    """

    def __init__(
        self, keypair: KeyPair, allowed_keys: Iterable[bytes] | Mapping[bytes, Identity]
    ) -> None:
        self.keypair = keypair
        self.ctx = zmq.asyncio.Context()
        self.peers: dict[bytes, Identity] | None = None
        self._callers: dict[str, Caller] = {}
        if isinstance(allowed_keys, Mapping):
            self.peers = check_peers(allowed_keys)
            self._callers = {
                who.user_id: Caller(who, key.decode("ascii")) for key, who in self.peers.items()
            }
        self.allowed: set[bytes] = set(allowed_keys)
        self._zap: zmq.asyncio.Socket | None = None
        self._zap_task: asyncio.Task[None] | None = None

    @property
    def checks_roles(self) -> bool:
        """True when every admitted key has an identity (a daemon's Node)."""
        return self.peers is not None

    @property
    def identity(self) -> Identity | None:
        """This daemon's own identity, when its key is among its peers."""
        return None if self.peers is None else self.peers.get(self.keypair.public)

    def identity_of(self, key: str | bytes) -> Identity | None:
        if self.peers is None:
            return None
        return self.peers.get(key.encode("ascii") if isinstance(key, str) else key)

    def caller(self, user_id: str) -> Caller | None:
        """The sender behind a received message's User-Id (None: unknown)."""
        return self._callers.get(user_id)

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
            status, text, user_id = b"400", b"refused", b""
            if version != b"1.0" or len(frames) < 6:
                text = b"malformed ZAP request"
            elif frames[5] != b"CURVE" or len(frames) < 7 or len(frames[6]) != 32:
                text = b"CURVE required"
            else:
                key = z85.encode(frames[6])
                address = frames[3].decode("ascii", "replace")
                refused = self._admission(key, frames[2].decode("ascii", "replace"))
                if refused is None:
                    status, text = b"200", b"OK"
                    who = self.identity_of(key)
                    user_id = who.user_id.encode() if who is not None else b""
                else:
                    log.warning("refused connection from %s: %s", address, refused)
                    text = b"refused"
            await zap.send_multipart([b"1.0", request_id, status, text, user_id, b""])

    def _admission(self, key: bytes, domain: str) -> str | None:
        """Why a client with `key` may not connect to a socket of ZAP `domain`."""
        if key not in self.allowed:
            return f"unknown CURVE key {key.decode('ascii', 'replace')}"
        _, restricted, roles = domain.partition(":")
        who = self.identity_of(key)
        if restricted and who is not None and who.role not in roles.split(","):
            return f"{who} may not connect to a socket for {roles}"
        return None

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

    def _common(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        # ZMTP heartbeats detect dead peers on idle connections.
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.MAXMSGSIZE, 512 * 1024 * 1024)
        # What this daemon speaks, told to every peer in the handshake.
        for prop in handshake_metadata():
            sock.setsockopt(zmq.METADATA, prop)

    @overload
    def server_socket(
        self, kind: int, roles: Collection[str] | None = None
    ) -> zmq.asyncio.Socket: ...

    @overload
    def server_socket(
        self, kind: int, roles: Collection[str] | None = None, *, socket_class: type[S]
    ) -> S: ...

    def server_socket(
        self,
        kind: int,
        roles: Collection[str] | None = None,
        *,
        socket_class: type[zmq.Socket] | None = None,
    ) -> zmq.Socket:
        """A CURVE server socket; with `roles`, only peers of those roles connect.

        An asyncio socket, or one of `socket_class` (a server that watches
        the socket's FD itself uses a plain one: `roost.wire.rpc`)."""
        # (Through the context, which closes it when it goes.)
        sock: zmq.Socket = self.ctx.socket(kind, socket_class=cast(Any, socket_class))
        self._common(sock)
        sock.curve_secretkey = self.keypair.secret
        sock.curve_publickey = self.keypair.public
        sock.curve_server = True
        # The ZAP domain is how a socket tells the handler whom it admits.
        domain = ZAP_DOMAIN if roles is None else f"{ZAP_DOMAIN}:{','.join(sorted(roles))}"
        sock.zap_domain = domain.encode()
        return sock

    def client_socket(
        self, kind: int, server_key: str | bytes, keypair: KeyPair | None = None
    ) -> zmq.asyncio.Socket:
        """A CURVE client socket, speaking with this daemon's key or `keypair`."""
        pair = keypair or self.keypair
        sock = self.ctx.socket(kind)
        self._common(sock)
        sock.curve_secretkey = pair.secret
        sock.curve_publickey = pair.public
        sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key
        return sock
