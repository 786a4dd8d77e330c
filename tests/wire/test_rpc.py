from __future__ import annotations

import asyncio

import pytest
import zmq

from roost.wire.cluster import Endpoint
from roost.wire.codec import encode
from roost.wire.keys import generate_keypair
from roost.wire.messages import Error, Msg, Ok, Ping
from roost.wire.node import Node
from roost.wire.pubsub import Publisher, Subscriber
from roost.wire.rpc import RemoteError, RpcClient, RpcServer, RpcTimeout


async def _echo(msg: Msg) -> Msg:
    if isinstance(msg, Ping):
        return Ok(detail="pong")
    return Error(message="unexpected")


async def test_request_reply_with_known_key() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    async with Node(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", _echo)
        task = asyncio.create_task(server.serve())
        client = RpcClient(cn, [Endpoint(server.address, server_kp.public_text)])
        reply = await client.call(Ping(), timeout=5)
        assert reply == Ok(detail="pong")
        await client.close()
        task.cancel()


async def test_unknown_key_gets_nothing() -> None:
    server_kp, client_kp, stranger = generate_keypair(), generate_keypair(), generate_keypair()
    async with Node(server_kp, [client_kp.public]) as sn, Node(stranger, []) as cn:
        seen: list[Msg] = []

        async def handler(msg: Msg) -> Msg:
            seen.append(msg)
            return Ok()

        server = RpcServer(sn, "tcp://127.0.0.1:*", handler)
        task = asyncio.create_task(server.serve())
        client = RpcClient(cn, [Endpoint(server.address, server_kp.public_text)])
        with pytest.raises(RpcTimeout):
            await client.call(Ping(), timeout=0.5, tries=2)
        assert seen == []
        await client.close()
        task.cancel()


async def test_plaintext_client_is_refused() -> None:
    server_kp = generate_keypair()
    async with Node(server_kp, []) as sn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", _echo)
        task = asyncio.create_task(server.serve())
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(server.address)
        await sock.send_multipart([b"1", encode(Ping())])
        assert await sock.poll(500) == 0
        ctx.destroy(linger=0)
        task.cancel()


async def test_malformed_message_is_dropped_and_server_survives() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    async with Node(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", _echo)
        task = asyncio.create_task(server.serve())
        raw = cn.client_socket(zmq.DEALER, server_kp.public)
        raw.connect(server.address)
        await raw.send_multipart([b"x", b"\xc1garbage"])
        await raw.send_multipart([b"only-one-frame-pair", b"a", b"b"])
        assert await raw.poll(300) == 0
        client = RpcClient(cn, [Endpoint(server.address, server_kp.public_text)])
        assert await client.call(Ping(), timeout=5) == Ok(detail="pong")
        raw.close()
        await client.close()
        task.cancel()


async def test_retry_moves_to_next_replica() -> None:
    good_kp, dead_kp, client_kp = generate_keypair(), generate_keypair(), generate_keypair()
    async with Node(good_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", _echo)
        task = asyncio.create_task(server.serve())
        dead = Endpoint("tcp://127.0.0.1:1", dead_kp.public_text)
        client = RpcClient(cn, [dead, Endpoint(server.address, good_kp.public_text)])
        for _ in range(3):
            assert await client.call(Ping(), timeout=0.3) == Ok(detail="pong")
        with pytest.raises(RpcTimeout):
            await client.call_endpoint(dead, Ping(), timeout=0.2)
        await client.close()
        task.cancel()


async def test_remote_error_is_raised() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    async with Node(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", _echo)
        task = asyncio.create_task(server.serve())
        client = RpcClient(cn, [Endpoint(server.address, server_kp.public_text)])
        with pytest.raises(RemoteError):
            await client.call(Ok(), timeout=2)
        await client.close()
        task.cancel()


async def test_pubsub_sequence_and_gap() -> None:
    pub_kp, sub_kp = generate_keypair(), generate_keypair()
    async with Node(pub_kp, [sub_kp.public]) as pn, Node(sub_kp, []) as sn:
        pub = Publisher(pn, "tcp://127.0.0.1:*")
        sub = Subscriber(sn, [Endpoint(pub.address, pub_kp.public_text)], ["routes"])
        got: list[tuple[str, Msg, bool]] = []
        for _ in range(50):  # slow joiner: publish until the subscription is live
            await pub.publish("routes", Ping())
            got += await sub.recv(timeout=0.05)
            if got:
                break
        assert got and got[0][0] == "routes"
        assert got[0][2] is True  # the first message seen is always a "gap"
        await pub.publish("routes", Ok(detail="a"))
        nxt = await sub.recv(timeout=2)
        while nxt and nxt[-1][1] == Ping():
            nxt = await sub.recv(timeout=2)
        assert nxt[-1][1] == Ok(detail="a") and nxt[-1][2] is False
        pub._seq["routes"] += 5  # simulate lost publications
        await pub.publish("routes", Ok(detail="b"))
        nxt = await sub.recv(timeout=2)
        assert nxt[-1][2] is True
        sub.close()
        pub.close()


async def test_a_timeout_does_not_cancel_other_requests_on_the_socket() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    async with Node(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:
        release = asyncio.Event()

        async def handler(msg: Msg) -> Msg:
            if isinstance(msg, Ping):
                await asyncio.sleep(10)  # never answers in time
            await release.wait()
            return Ok(detail="late")

        server = RpcServer(sn, "tcp://127.0.0.1:*", handler)
        task = asyncio.create_task(server.serve())
        ep = Endpoint(server.address, server_kp.public_text)
        client = RpcClient(cn, [ep])
        slow = asyncio.create_task(client.call_endpoint(ep, Ok(), timeout=3))
        await asyncio.sleep(0.2)
        with pytest.raises(RpcTimeout):
            await client.call_endpoint(ep, Ping(), timeout=0.3)
        # The other request saw its socket reset: a timeout, not a cancellation.
        with pytest.raises(RpcTimeout):
            await slow
        assert not slow.cancelled()
        release.set()
        await client.close()
        task.cancel()
