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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import zmq
import zmq.asyncio

from roost.wire.authz import refusal
from roost.wire.cluster import Endpoint
from roost.wire.codec import BadMessage, Refused, decode, encode
from roost.wire.dispatch import Handlers
from roost.wire.keys import KeyPair
from roost.wire.messages import Error, Msg
from roost.wire.node import Node
from roost.wire.version import peer_protocol, speaks

log = logging.getLogger("roost.wire.rpc")

Handler = Callable[[Msg], Awaitable[Msg]]  # or a Handlers table (roost.wire.dispatch)


class RpcTimeout(Exception):
    """No endpoint answered within the allowed tries."""


class RemoteError(Exception):
    """The server answered with an Error message."""


class _Watched(zmq.Socket):
    """A ROUTER whose close also ends the loop's watch on its FD, whoever
    closes it (the server, or its Node's context going first): a watch left
    on a closed FD would fire for whatever file gets that number next."""

    _unwatch: Callable[[], None] | None = None  # declared: pyzmq maps other names to options

    def close(self, linger: int | None = None) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        super().close(linger)


class Outbox:
    """Replies out of one socket, in order: sent at once when the socket takes
    them (NOBLOCK), else queued until `flush` finds it writable again.

    A reply ZeroMQ cannot deliver (the peer is gone, the socket closed) is
    dropped, as a lost reply always may be: the client retries.
    """

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock = sock
        self._queue: deque[list[bytes]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def send(self, frames: list[bytes]) -> None:
        if self._queue or not self._try(frames):
            self._queue.append(frames)

    def flush(self) -> int:
        """Send what the socket takes now; how many went."""
        sent = 0
        while self._queue and self._try(self._queue[0]):
            self._queue.popleft()
            sent += 1
        return sent

    def _try(self, frames: list[bytes]) -> bool:
        """False when the socket would block (the caller keeps the frames)."""
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            log.debug("reply dropped: %s", exc)
        return True


class RpcServer:
    """Serve requests on a bound ROUTER socket, each in its own task, or at
    once when the handler table answers it from memory (`dispatch.at_once`).

    On a daemon's Node every request is checked against `roost.wire.authz`
    (the sender's role, and the claims it makes about itself) before the
    handler sees it; a refusal is logged and answered with an Error.

    Theory of operation: requests are read without a Future each (at a
    thousand heartbeats a second, a Future and its callbacks per message
    in and out were most of what a controller spent on them). ZeroMQ makes
    its socket's FD readable when the socket's events *may* have changed,
    and only then: it is edge-triggered, and any call on the socket (a send
    too) may take in the news and leave messages waiting behind a quiet FD.
    So the loop watches the FD and `_drain` reads with NOBLOCK until EVENTS
    shows nothing to do, which leaves the FD armed for the next change; a
    drain that stops at its batch (so others get the loop), and every reply
    sent from a task, schedule another drain. Replies go out at once
    (`Outbox`); one the socket cannot take yet waits for a drain to find it
    writable. `tests/wire/test_rpc_server.py` holds these cases.
    """

    BATCH = 256  # requests read per drain before the loop serves others

    def __init__(self, node: Node, bind: str, handler: Handler) -> None:
        sock = node.server_socket(zmq.ROUTER, socket_class=_Watched)
        # The server sends no ZMTP pings of its own: every client pings it
        # (Node._common), and each ping tells the server to drop the
        # connection if the client then goes silent (HEARTBEAT_TTL); the
        # client learns of a dead server from its own. Pinging both ways
        # cost a controller a twentieth of a core at a thousand runners.
        # (Before bind: the option is copied to the connections from there.)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 0)
        self.sock: _Watched = sock
        self.sock.bind(bind)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._node = node
        self._handler = handler
        self._now = handler.answer_now if isinstance(handler, Handlers) else None
        self._out = Outbox(self.sock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._broken: asyncio.Future[None] | None = None
        self._drain_due = False
        self._draining = False

    @property
    def queued(self) -> int:
        """Replies waiting for the socket to take them (normally none)."""
        return len(self._out)

    async def serve(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._broken = loop.create_future()
        fd = self.sock.FD
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            loop.add_reader(fd, self._drain)

            def unwatch() -> None:
                loop.remove_reader(fd)

            self.sock._unwatch = unwatch
            try:
                self._drain()  # what came before the watch: no new edge says so
                await self._broken  # only a dead socket (or cancellation) ends this
            finally:
                self.sock.close(linger=0)

    def _drain_soon(self) -> None:
        if not (self._drain_due or self._draining) and self._loop is not None:
            self._drain_due = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_due = False
        self._draining = True
        sock, out = self.sock, self._out
        try:
            for _ in range(self.BATCH):
                # Reading EVENTS takes in all ZeroMQ has to tell the socket;
                # once it shows nothing to do, the FD signals the next change.
                events = cast(int, sock.get(zmq.EVENTS))
                if out and events & zmq.POLLOUT:
                    if out.flush():
                        continue  # a send may have taken in news: look again
                    events = cast(int, sock.get(zmq.EVENTS))  # so may one that failed
                if not events & zmq.POLLIN:
                    return
                # Frames, not bytes: the payload's frame carries the
                # sender's identity (the User-Id its ZAP answer set).
                self._take(sock.recv_multipart(zmq.NOBLOCK, copy=False))
        except zmq.ZMQError as exc:  # closed under us (the context went)
            sock.close(linger=0)
            if self._broken is not None and not self._broken.done():
                self._broken.set_exception(exc)
            return
        finally:
            self._draining = False
        self._drain_soon()  # a full batch: more may wait, and no edge will say so

    def _take(self, frames: list[zmq.Frame]) -> None:
        if len(frames) != 3:
            log.warning("dropped request with %d frames", len(frames))
            return
        peer, request_id, frame = frames[0].bytes, frames[1].bytes, frames[2]
        try:
            msg = decode(frame.bytes)
        except Refused as exc:
            # A message this release does not take (a newer sender's type,
            # or fields of the wrong type): say so, rather than let the
            # sender wait out its timeout. Nothing was handled.
            why = f"{exc}: {speaks(peer_protocol(frame))}"
            log.warning("refused: %s", why)
            self._reply(peer, request_id, Error(message=why, retryable=exc.retryable))
            return
        except BadMessage as exc:  # not msgpack: no Roost peer of any release sent it
            log.warning("dropped malformed message: %s", exc)
            return
        refused = self._refusal(msg, frame)
        if refused is not None:
            log.warning("refused: %s", refused)
            self._reply(peer, request_id, Error(message=f"refused: {refused}"))
            return
        if self._now is not None:  # answered from memory, here and now
            try:
                reply = self._now(msg)
            except Exception as exc:
                reply = self._failed(msg, exc)
            if reply is not None:
                self._reply(peer, request_id, reply)
                return
        assert self._tg is not None
        self._tg.create_task(self._answer(peer, request_id, msg))

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

    async def _answer(self, peer: bytes, request_id: bytes, msg: Msg) -> None:
        try:
            reply = await self._handler(msg)
        except Exception as exc:
            reply = self._failed(msg, exc)
        self._reply(peer, request_id, reply)

    @staticmethod
    def _failed(msg: Msg, exc: Exception) -> Msg:
        # A handler bug must not kill the server: the caller gets an Error.
        log.exception("handler failed on %s", type(msg).__name__, exc_info=exc)
        return Error(message=f"{type(exc).__name__}: {exc}")

    def _reply(self, peer: bytes, request_id: bytes, reply: Msg) -> None:
        self._out.send([peer, request_id, encode(reply)])
        self._drain_soon()


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
