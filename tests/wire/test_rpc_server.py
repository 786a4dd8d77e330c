"""The RPC server's own reading and writing (roost.wire.rpc.RpcServer, Outbox).

It reads its ROUTER socket without a Future per message, so what these pin
down is ZeroMQ's edge-triggered FD: requests that queued while nobody
watched, more than one drain's batch, replies sent from tasks (a send may
swallow the signal of a request that arrived meanwhile), and replies the
socket cannot take yet (EAGAIN) that must still go out, in order.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq
import zmq.asyncio

from roost.wire.cluster import Endpoint
from roost.wire.codec import decode, encode
from roost.wire.dispatch import Handlers, at_once
from roost.wire.keys import generate_keypair
from roost.wire.messages import Msg, Ok, Ping
from roost.wire.node import Node
from roost.wire.rpc import Outbox, RemoteError, RpcClient, RpcServer


async def _replies(sock: zmq.asyncio.Socket, n: int) -> list[tuple[bytes, Msg]]:
    got: list[tuple[bytes, Msg]] = []
    async with asyncio.timeout(30):
        while len(got) < n:
            request_id, payload = await sock.recv_multipart()
            got.append((request_id, decode(payload)))
    return got


async def test_a_burst_queued_before_the_server_reads_is_all_answered() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    async with Node(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:

        async def handler(msg: Msg) -> Msg:
            assert isinstance(msg, Ok)
            if int(msg.detail) % 2:
                await asyncio.sleep(0)  # answered from a task, after others came in
            return Ok(detail=f"re {msg.detail}")

        server = RpcServer(sn, "tcp://127.0.0.1:*", handler)
        client = cn.client_socket(zmq.DEALER, server_kp.public)
        client.connect(server.address)
        # First more malformed requests than one drain takes (dropped, so
        # no reply of theirs makes the server look again), then the burst.
        for _ in range(RpcServer.BATCH + 1):
            await client.send_multipart([b"bad", b"\xc1"])
        n = 3 * RpcServer.BATCH + 7
        for i in range(n):
            await client.send_multipart([f"id-{i}".encode(), encode(Ok(detail=str(i)))])
        # Polling the server's socket consumes the FD's signal: the requests
        # wait with nothing left to say so, as if a send had swallowed it.
        # (Awaited: the handshake needs the loop, for the Node's ZAP answer.)
        async with asyncio.timeout(30):
            while not server.sock.poll(0, zmq.POLLIN):
                await asyncio.sleep(0.01)
        time.sleep(0.3)  # the loop stays blocked while the rest of the burst queues
        task = asyncio.create_task(server.serve())
        got = await _replies(client, n)
        assert sorted(got, key=lambda r: int(r[0][3:])) == [
            (f"id-{i}".encode(), Ok(detail=f"re {i}")) for i in range(n)
        ]
        # and the server still reads what comes after
        await client.send_multipart([b"late", encode(Ok(detail="1"))])
        assert await _replies(client, 1) == [(b"late", Ok(detail="re 1"))]
        client.close(linger=0)
        task.cancel()


async def test_an_at_once_entry_is_answered_as_it_is_read_without_a_task() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    answered_in: list[asyncio.Task[object] | None] = []

    def answer(msg: Ping) -> Msg:
        answered_in.append(asyncio.current_task())
        return Ok(detail="now")

    def broken(msg: Ok) -> Msg:
        raise RuntimeError("boom")

    table = Handlers("test", [at_once(Ping, answer), at_once(Ok, broken)])
    async with Node(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", table)
        task = asyncio.create_task(server.serve())
        client = RpcClient(cn, [Endpoint(server.address, server_kp.public_text)])
        assert await client.call(Ping(), timeout=5) == Ok(detail="now")
        assert answered_in == [None]  # in the server's reader, not a task
        with pytest.raises(RemoteError, match="RuntimeError: boom"):
            await client.call(Ok(), timeout=5)
        assert await table(Ping()) == Ok(detail="now")  # awaited, as any entry
        await client.close()
        task.cancel()


class _TightNode(Node):
    """Sockets with one-message queues and small kernel buffers, so that a
    peer that reads nothing fills the pipe to it after a few replies. (Set
    here: a socket takes them for its connections only before it binds.)"""

    def _common(self, sock: zmq.Socket) -> None:
        super()._common(sock)
        sock.setsockopt(zmq.SNDHWM, 1)
        sock.setsockopt(zmq.SNDBUF, 8192)


async def test_replies_the_socket_cannot_take_yet_go_out_later_in_order() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    big = "x" * 200_000
    async with _TightNode(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:

        async def handler(msg: Msg) -> Msg:
            return Ok(detail=big)

        server = RpcServer(sn, "tcp://127.0.0.1:*", handler)
        # Mandatory routing makes a full pipe say EAGAIN instead of dropping
        # the reply.
        server.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        task = asyncio.create_task(server.serve())
        client = cn.client_socket(zmq.DEALER, server_kp.public)
        client.setsockopt(zmq.RCVHWM, 1)
        client.setsockopt(zmq.RCVBUF, 8192)
        client.connect(server.address)
        n = 40
        for i in range(n):
            await client.send_multipart([f"id-{i}".encode(), encode(Ping())])
        async with asyncio.timeout(30):  # the client reads nothing yet
            while not server.queued:
                await asyncio.sleep(0.01)
        got = await _replies(client, n)
        assert [rid for rid, _ in got] == [f"id-{i}".encode() for i in range(n)]
        assert all(reply == Ok(detail=big) for _, reply in got)
        assert server.queued == 0
        client.close(linger=0)
        task.cancel()


def test_outbox_keeps_what_would_block_and_sends_it_in_order() -> None:
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.linger = 0
        push.bind("inproc://outbox")
        out = Outbox(push)
        out.send([b"1"])  # no peer yet: EAGAIN
        out.send([b"2"])  # behind the first, even if it could go
        assert len(out) == 2
        out.flush()
        assert len(out) == 2
        pull = ctx.socket(zmq.PULL)
        pull.linger = 0
        pull.connect("inproc://outbox")
        assert push.poll(5_000, zmq.POLLOUT)
        out.flush()
        assert len(out) == 0
        out.send([b"3"])
        assert [pull.recv(), pull.recv(), pull.recv()] == [b"1", b"2", b"3"]
        push.close()
        pull.close()
        out.send([b"4"])  # a closed socket: dropped, like any lost reply
        assert len(out) == 0
    finally:
        ctx.destroy(linger=0)


async def test_the_watch_on_the_fd_ends_with_the_socket() -> None:
    server_kp = generate_keypair()
    loop = asyncio.get_running_loop()
    for stop_first in ("server", "node"):
        sn = Node(server_kp, [])
        sn.start()
        server = RpcServer(sn, "tcp://127.0.0.1:*", handler=_never)
        fd = server.sock.FD
        task = asyncio.create_task(server.serve())
        await asyncio.sleep(0)
        if stop_first == "server":
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sn.aclose()
        else:  # the context goes first and closes the socket under the server
            sn.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert not loop.remove_reader(fd), f"a watch on the FD outlived the socket ({stop_first})"


async def _never(msg: Msg) -> Msg:
    raise AssertionError(f"no request expected, got {msg!r}")
