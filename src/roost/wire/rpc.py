"""Request/reply over ROUTER (server) and DEALER (client) sockets.

Frames: [request_id, payload] from a DEALER; a ROUTER prefixes the peer
identity. Request ids make retries idempotent for handlers that care and let a
client discard late replies. The client follows the ZeroMQ guide's Lazy
Pirate: a request that gets no reply within its per-try timeout is retried on
the next endpoint, and the socket that stayed silent is closed and reopened, so
a lost reply never wedges anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

import zmq
import zmq.asyncio

from roost.wire.authz import refusal
from roost.wire.cluster import Endpoint
from roost.wire.codec import BadMessage, decode, encode
from roost.wire.keys import KeyPair
from roost.wire.messages import Error, Msg
from roost.wire.node import Node

log = logging.getLogger("roost.wire.rpc")

Handler = Callable[[Msg], Awaitable[Msg]]


class RpcTimeout(Exception):
    """No endpoint answered within the allowed tries."""


class RemoteError(Exception):
    """The server answered with an Error message."""


class RpcServer:
    """Serve requests on a bound ROUTER socket, each in its own task.

    On a daemon's Node every request is checked against `roost.wire.authz`
    (the sender's role, and the claims it makes about itself) before the
    handler sees it; a refusal is logged and answered with an Error.
    """

    def __init__(self, node: Node, bind: str, handler: Handler) -> None:
        self.sock = node.server_socket(zmq.ROUTER)
        self.sock.bind(bind)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._node = node
        self._handler = handler

    async def serve(self) -> None:
        async with asyncio.TaskGroup() as tg:
            try:
                while True:
                    # Frames, not bytes: the payload's frame carries the
                    # sender's identity (the User-Id its ZAP answer set).
                    frames = await self.sock.recv_multipart(copy=False)
                    if len(frames) != 3:
                        log.warning("dropped request with %d frames", len(frames))
                        continue
                    tg.create_task(self._handle(frames[0].bytes, frames[1].bytes, frames[2]))
            finally:
                self.sock.close(linger=0)

    def _refusal(self, msg: Msg, frame: zmq.Frame) -> str | None:
        if not self._node.checks_roles:
            return None
        try:
            user_id = frame.get("User-Id")
        except zmq.ZMQError:
            user_id = ""
        caller = self._node.caller(str(user_id))
        if caller is None:
            return f"{type(msg).__name__} from an unknown sender ({user_id!r})"
        return refusal(msg, caller.identity, caller.key)

    async def _handle(self, peer: bytes, request_id: bytes, frame: zmq.Frame) -> None:
        try:
            msg = decode(frame.bytes)
        except BadMessage as exc:
            log.warning("dropped malformed message: %s", exc)
            return
        refused = self._refusal(msg, frame)
        if refused is not None:
            log.warning("refused: %s", refused)
            with contextlib.suppress(zmq.ZMQError):
                await self.sock.send_multipart(
                    [peer, request_id, encode(Error(message=f"refused: {refused}"))]
                )
            return
        try:
            reply = await self._handler(msg)
        except Exception as exc:  # a handler bug must not kill the server
            log.exception("handler failed on %s", type(msg).__name__)
            reply = Error(message=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(zmq.ZMQError):
            await self.sock.send_multipart([peer, request_id, encode(reply)])


class _Channel:
    """One DEALER to one endpoint, with a reader task that resolves futures."""

    def __init__(self, node: Node, endpoint: Endpoint, keypair: KeyPair | None = None) -> None:
        self.endpoint = endpoint
        self.sock = node.client_socket(zmq.DEALER, endpoint.public_key, keypair)
        self.sock.connect(endpoint.address)
        self.pending: dict[bytes, asyncio.Future[Msg]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                frames = await self.sock.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            if len(frames) != 2:
                continue
            fut = self.pending.pop(frames[0], None)
            if fut is None or fut.done():
                continue  # a late reply to a request we gave up on
            try:
                fut.set_result(decode(frames[1]))
            except BadMessage as exc:
                log.warning("dropped malformed reply from %s: %s", self.endpoint.address, exc)
                fut.set_exception(exc)

    async def request(self, request_id: bytes, payload: bytes, timeout: float) -> Msg:
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = fut
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
            # cancellation of the caller that arrives as the reply does, and
            # the cancelled task carries on as if nothing had happened.
            # The send is inside the deadline too: a DEALER with no peer
            # attached (the server refused our key, and the connection is
            # between retries) waits to send for as long as that lasts.
            async with asyncio.timeout(timeout):
                await self.sock.send_multipart([request_id, payload])
                return await fut
        finally:
            self.pending.pop(request_id, None)

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        # Other tasks' requests on this socket fail as timeouts (their caller
        # retries elsewhere); cancelling them would look like their own task
        # being cancelled and end it silently inside a TaskGroup.
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(TimeoutError("the connection was reset after a timeout"))
        self.sock.close(linger=0)


class RpcClient:
    """Send requests to any replica of a role, with retries across replicas.

    Requests go with the node's key, or with `keypair` (another identity of
    this process, e.g. one of the many hosts a benchmark simulates).
    """

    def __init__(
        self, node: Node, endpoints: Sequence[Endpoint], keypair: KeyPair | None = None
    ) -> None:
        if not endpoints:
            raise ValueError("RpcClient needs at least one endpoint")
        self._node = node
        self._keypair = keypair
        self._endpoints = list(endpoints)
        self._channels: dict[str, _Channel] = {}
        self._start = itertools.count()
        self._prefix = os.urandom(6).hex().encode()
        self._seq = itertools.count()

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    def new_request_id(self) -> bytes:
        return self._prefix + b"-" + str(next(self._seq)).encode()

    def _channel(self, ep: Endpoint) -> _Channel:
        ch = self._channels.get(ep.address)
        if ch is None:
            ch = _Channel(self._node, ep, self._keypair)
            self._channels[ep.address] = ch
        return ch

    async def _reset(self, ep: Endpoint) -> None:
        ch = self._channels.pop(ep.address, None)
        if ch is not None:
            await ch.close()

    async def call_endpoint(self, ep: Endpoint, msg: Msg, timeout: float = 5.0) -> Msg:
        """One try against one endpoint; raises RpcTimeout or RemoteError."""
        try:
            reply = await self._channel(ep).request(self.new_request_id(), encode(msg), timeout)
        except TimeoutError:
            await self._reset(ep)
            raise RpcTimeout(f"{ep.address} did not answer within {timeout:.1f}s") from None
        if isinstance(reply, Error):
            raise RemoteError(reply.message)
        return reply

    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
        """Try each endpoint in turn (rotating start) until one answers."""
        n = len(self._endpoints)
        tries = tries or max(2, n)
        payload = encode(msg)
        request_id = self.new_request_id()  # same id on every try: idempotent
        first = next(self._start)
        last: Exception | None = None
        for i in range(tries):
            ep = self._endpoints[(first + i) % n]
            try:
                reply = await self._channel(ep).request(request_id, payload, timeout)
            except TimeoutError:
                await self._reset(ep)
                last = RpcTimeout(f"{ep.address} did not answer within {timeout:.1f}s")
                continue
            except BadMessage as exc:
                last = exc
                continue
            if isinstance(reply, Error):
                if reply.retryable:
                    last = RemoteError(reply.message)
                    continue
                raise RemoteError(reply.message)
            return reply
        raise RpcTimeout(f"no reply after {tries} tries: {last}")

    async def call_all(self, msg: Msg, timeout: float = 5.0) -> list[Msg | BaseException]:
        """Send to every replica at once; one result (or exception) per endpoint."""
        return await asyncio.gather(
            *(self.call_endpoint(ep, msg, timeout) for ep in self._endpoints),
            return_exceptions=True,
        )

    async def close(self) -> None:
        for ep in list(self._endpoints):
            await self._reset(ep)
