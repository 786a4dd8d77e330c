"""msgpack encoding of wire messages; decoding failures are one exception type."""

from __future__ import annotations

import msgspec

from roost.wire.messages import AnyMsg, Msg

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyMsg] = msgspec.msgpack.Decoder(AnyMsg)


class BadMessage(Exception):
    """A frame that is not a well-formed Roost message."""


def encode(msg: Msg) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes) -> Msg:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadMessage(str(exc)) from exc
