"""Wire compatibility between neighbouring releases (roost.wire.version).

Real encoded bytes both ways: every message of this tree decodes in the
previous release's definitions (read from git, CHANGELOG.md names it) and
every message of that release decodes here, keeping what it said. A
message from a future release with fields we do not know decodes; one that
lacks fields added since decodes with their defaults; a type we do not know
is answered with an Error that says so, by a real RPC server.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
import zmq
import zmq.asyncio

from roost.wire.codec import KNOWN_TYPES, InvalidMessage, UnknownMessage, decode, encode
from roost.wire.keys import generate_keypair
from roost.wire.messages import (
    AnyMsg,
    Error,
    Heartbeat,
    InstanceStatus,
    Msg,
    Ok,
    Ping,
)
from roost.wire.node import Node
from roost.wire.rpc import RpcServer
from roost.wire.version import PROTOCOL, peer_protocol
from tests.previous_release import file_at, git, previous_release

MESSAGES = "src/roost/wire/messages"  # a package since 0.2.0; one file (.py) before


def sample(t: msgspec.inspect.Type, name: str = "x") -> Any:
    """A value of type `t` as builtins, unlike any default (so a field that
    went missing on the way shows)."""
    i = msgspec.inspect
    if isinstance(t, i.StructType):
        out = {f.encode_name: sample(f.type, f.name) for f in t.fields}
        if t.tag_field is not None:
            out[t.tag_field] = t.tag
        return out
    if isinstance(t, i.StrType):
        return f"s-{name}"
    if isinstance(t, i.BoolType):
        return True
    if isinstance(t, i.IntType):
        return 7
    if isinstance(t, i.FloatType):
        return 1.5
    if isinstance(t, i.BytesType):
        return b"b"
    if isinstance(t, i.NoneType):
        return None
    if isinstance(t, i.ListType):
        return [sample(t.item_type, name)]
    if isinstance(t, i.TupleType):
        return [sample(x, name) for x in t.item_types]
    if isinstance(t, i.DictType):
        return {sample(t.key_type, name): sample(t.value_type, name)}
    if isinstance(t, i.LiteralType):
        return t.values[-1]
    if isinstance(t, i.UnionType):
        return sample(next(x for x in t.types if not isinstance(x, i.NoneType)), name)
    raise AssertionError(f"no sample for {t!r}: teach sample() this type")


def samples(union: Any) -> Iterator[tuple[str, bytes]]:
    """(type name, encoded message) for every message of a union."""
    for cls, info in zip(
        get_args(union), msgspec.inspect.multi_type_info(get_args(union)), strict=True
    ):
        assert isinstance(info, msgspec.inspect.StructType)
        built = msgspec.convert(sample(info), type=cls)
        yield cls.__name__, msgspec.msgpack.encode(built)


def within(old: Any, new: Any) -> bool:
    """`old` (builtins) says nothing `new` does not: each key of a map is in
    the other with the same value; lists item by item."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(k in new and within(v, new[k]) for k, v in old.items())
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(within(a, b) for a, b in zip(old, new, strict=True))
    return bool(old == new)


def load_messages(rev: str, name: str) -> types.ModuleType:
    """`roost.wire.messages` as release `rev` had it, as module `name`
    (registered in sys.modules: msgspec resolves annotations through it).
    One file, or a package whose modules import each other by their full
    names: those are read as `name`'s, each once the ones it imports are."""
    files = git("ls-tree", "--name-only", rev, f"{MESSAGES}/").split()
    if not files:
        module = types.ModuleType(name)
        module.__file__ = f"{rev}:{MESSAGES}.py"
        sys.modules[name] = module
        exec(compile(file_at(rev, f"{MESSAGES}.py"), module.__file__, "exec"), module.__dict__)
        return module
    package = types.ModuleType(name)
    package.__path__ = []
    sys.modules[name] = package
    pending = {Path(f).stem: f for f in files if f.endswith(".py")}
    while pending:
        before = len(pending)
        for stem, path in list(pending.items()):
            full = name if stem == "__init__" else f"{name}.{stem}"
            module = package if stem == "__init__" else types.ModuleType(full)
            module.__file__ = f"{rev}:{path}"
            source = file_at(rev, path).replace("roost.wire.messages", name)
            sys.modules[full] = module
            try:
                exec(compile(source, module.__file__, "exec"), module.__dict__)
            except ImportError:
                del sys.modules[full]  # imports one not read yet: next round
                if stem == "__init__":
                    sys.modules[name] = package
                continue
            del pending[stem]
        assert len(pending) < before, f"{sorted(pending)} of {rev} import what is not there"
    return package


@pytest.fixture(scope="module")
def previous() -> Iterator[types.ModuleType]:
    """The previous release's roost.wire.messages, as its own module."""
    name = "roost_previous_release_messages"
    try:
        yield load_messages(previous_release().rev, name)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
            del sys.modules[key]


def test_this_trees_messages_read_from_git_are_these() -> None:
    """The loader reads a package (this tree's, as committed) as well as one file."""
    ours = load_messages("HEAD", "roost_head_messages")
    try:
        committed = {cls.__name__ for cls in get_args(ours.AnyMsg)}
        assert committed <= {cls.__name__ for cls in get_args(AnyMsg)}
        assert {"Heartbeat", "BackupEvent", "RouteDelta"} <= committed
    finally:
        for key in [k for k in sys.modules if k.startswith("roost_head_messages")]:
            del sys.modules[key]


def test_every_message_of_this_release_decodes_in_the_previous_one(
    previous: types.ModuleType,
) -> None:
    theirs = msgspec.msgpack.Decoder(previous.AnyMsg)
    known_there = {cls.__name__ for cls in get_args(previous.AnyMsg)}
    checked = 0
    for name, data in samples(AnyMsg):
        if name not in known_there:
            with pytest.raises(msgspec.ValidationError, match="Invalid value"):
                theirs.decode(data)  # new to them: what our codec calls UnknownMessage
            continue
        got = theirs.decode(data)
        said = msgspec.msgpack.decode(msgspec.msgpack.encode(got))
        assert within(said, msgspec.msgpack.decode(data)), name
        checked += 1
    assert checked == len(known_there)  # nothing of theirs was dropped here


def test_every_message_of_the_previous_release_decodes_here_and_keeps_what_it_said(
    previous: types.ModuleType,
) -> None:
    theirs = msgspec.msgpack.Decoder(previous.AnyMsg)
    for name, data in samples(previous.AnyMsg):
        mine = decode(data)
        # Through this release and back, the older daemon reads what it sent.
        assert theirs.decode(encode(mine)) == theirs.decode(data), name


class FutureStatus(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: str
    app: str
    release: int
    process_type: str
    state: str
    io_wait_seconds: float = 0.0  # new in the future


class FutureHeartbeat(Msg, frozen=True, kw_only=True, tag="Heartbeat"):
    host_id: str
    hostname: str
    instances: list[FutureStatus] = []
    protocol_hint: dict[str, int] = {}  # new in the future
    labels: list[str] = []  # new in the future


def test_a_future_message_with_fields_unknown_here_decodes() -> None:
    future = FutureHeartbeat(
        host_id="h1",
        hostname="web-1",
        instances=[
            FutureStatus(
                instance_id="i1",
                app="shop",
                release=3,
                process_type="web",
                state="up",
                io_wait_seconds=9.5,
            )
        ],
        protocol_hint={"wire": PROTOCOL + 1},
        labels=["rack-2"],
    )
    got = decode(encode(future))
    assert got == Heartbeat(
        host_id="h1",
        hostname="web-1",
        instances=[
            InstanceStatus(instance_id="i1", app="shop", release=3, process_type="web", state="up")
        ],
    )


def test_an_old_message_without_fields_added_since_decodes_with_their_defaults() -> None:
    # Every message with only its required fields, as the oldest sender that
    # knew the type would have written it.
    for cls, info in zip(
        get_args(AnyMsg), msgspec.inspect.multi_type_info(get_args(AnyMsg)), strict=True
    ):
        assert isinstance(info, msgspec.inspect.StructType)
        full = sample(info)
        required = {f.encode_name for f in info.fields if f.required}
        bare = {k: v for k, v in full.items() if k in required or k == info.tag_field}
        got = decode(msgspec.msgpack.encode(bare))
        assert type(got) is cls
        expected = msgspec.convert(bare, type=cls)  # every other field at its default
        assert got == expected
        for f in info.fields:
            if not f.required:
                assert getattr(got, f.name) == (
                    f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
                )


def test_refusals_are_distinct_from_garbage() -> None:
    with pytest.raises(UnknownMessage, match="unknown message type 'FromTheFuture'") as unknown:
        decode(msgspec.msgpack.encode({"type": "FromTheFuture", "x": 1}))
    assert unknown.value.retryable and unknown.value.kind == "FromTheFuture"
    with pytest.raises(InvalidMessage, match=r"invalid Heartbeat: .*host_id") as invalid:
        decode(msgspec.msgpack.encode({"type": "Heartbeat", "host_id": 5, "hostname": "h"}))
    assert not invalid.value.retryable
    assert "Heartbeat" in KNOWN_TYPES and len(KNOWN_TYPES) == len(get_args(AnyMsg))


async def _ask(sock: zmq.asyncio.Socket, payload: bytes) -> Msg:
    await sock.send_multipart([b"r1", payload])
    async with asyncio.timeout(10):
        request_id, reply = await sock.recv_multipart()
    assert request_id == b"r1"
    return decode(reply)


async def test_a_real_server_answers_what_it_does_not_take_and_handles_none_of_it() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    handled: list[Msg] = []

    async def handler(msg: Msg) -> Msg:
        handled.append(msg)
        return Ok(detail=type(msg).__name__)

    async with Node(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", handler)
        task = asyncio.create_task(server.serve())
        sock = cn.client_socket(zmq.DEALER, server_kp.public)
        sock.connect(server.address)
        # A peer of 0.1.0 says no protocol in its handshake.
        old = cn.ctx.socket(zmq.DEALER)
        old.linger = 0
        old.curve_secretkey, old.curve_publickey = client_kp.secret, client_kp.public
        old.curve_serverkey = server_kp.public
        old.connect(server.address)
        try:
            unknown = await _ask(sock, msgspec.msgpack.encode({"type": "FromTheFuture"}))
            assert isinstance(unknown, Error) and unknown.retryable
            assert "unknown message type 'FromTheFuture'" in unknown.message
            assert f"(protocol {PROTOCOL}); the sender protocol {PROTOCOL}" in unknown.message
            bad = msgspec.msgpack.encode({"type": "Heartbeat", "host_id": [1], "hostname": "h"})
            invalid = await _ask(old, bad)
            assert isinstance(invalid, Error) and not invalid.retryable
            assert invalid.message.startswith("invalid Heartbeat: Expected `str`")
            assert "the sender protocol 0 (0.1.0" in invalid.message
            assert handled == []
            # ...and a future message with more fields is handled as what it is.
            future = FutureHeartbeat(host_id="h1", hostname="web-1", labels=["x"])
            assert await _ask(sock, encode(future)) == Ok(detail="Heartbeat")
            assert handled == [Heartbeat(host_id="h1", hostname="web-1")]
            assert await _ask(old, encode(Ping())) == Ok(detail="Ping")
        finally:
            sock.close(linger=0)
            old.close(linger=0)
            task.cancel()


async def test_the_handshake_tells_the_receiver_the_senders_protocol() -> None:
    server_kp, client_kp = generate_keypair(), generate_keypair()
    async with Node(server_kp, [client_kp.public]) as sn, Node(client_kp, []) as cn:
        server = sn.server_socket(zmq.ROUTER)
        server.bind("tcp://127.0.0.1:*")
        address = server.getsockopt_string(zmq.LAST_ENDPOINT)
        client = cn.client_socket(zmq.DEALER, server_kp.public)
        client.connect(address)
        bare = cn.ctx.socket(zmq.DEALER)  # no metadata, as 0.1.0's sockets
        bare.linger = 0
        bare.curve_secretkey, bare.curve_publickey = client_kp.secret, client_kp.public
        bare.curve_serverkey = server_kp.public
        bare.connect(address)
        try:
            seen: dict[bytes, tuple[bytes, int]] = {}
            await client.send_multipart([b"new", b""])
            await bare.send_multipart([b"old", b""])
            async with asyncio.timeout(10):
                while len(seen) < 2:
                    frames = await server.recv_multipart(copy=False)
                    seen[frames[1].bytes] = (frames[0].bytes, peer_protocol(frames[2]))
            assert {k: v[1] for k, v in seen.items()} == {b"new": PROTOCOL, b"old": 0}
            # The other way too: the server's handshake said its protocol.
            await server.send_multipart([seen[b"new"][0], b"back"])
            async with asyncio.timeout(10):
                reply = await client.recv_multipart(copy=False)
            assert reply[0].bytes == b"back" and peer_protocol(reply[0]) == PROTOCOL
        finally:
            client.close(linger=0)
            bare.close(linger=0)
            server.close(linger=0)
