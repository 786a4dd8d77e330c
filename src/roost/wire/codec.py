"""msgpack encoding of wire messages; decoding failures are one exception type.

A frame that is not msgpack at all (`BadMessage`) comes from no Roost peer of
any release: the transports drop it. A well-formed map that is not a message
this release takes is `Refused`: a type it does not know (`UnknownMessage`,
likely from a newer release: roost.wire.version) or a known type with fields
of the wrong type (`InvalidMessage`); the RPC server answers either with an
Error, and nothing changes.
"""

from __future__ import annotations

from typing import get_args

import msgspec

from roost.wire.messages import AnyMsg, Msg

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyMsg] = msgspec.msgpack.Decoder(AnyMsg)

KNOWN_TYPES = frozenset(str(t.__struct_config__.tag) for t in get_args(AnyMsg))


class _Envelope(msgspec.Struct):
    """Any message's tag, whatever else it holds."""

    type: str


_envelope = msgspec.msgpack.Decoder(_Envelope)


class BadMessage(Exception):
    """A frame that is not a well-formed Roost message."""


class Refused(BadMessage):
    """A well-formed frame that is no message this release takes."""

    retryable = False

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind


class UnknownMessage(Refused):
    """A message type this release does not know (a newer sender's).
    Retryable: another replica may be of the newer release."""

    retryable = True


class InvalidMessage(Refused):
    """A known message type (or no type at all) with fields that do not fit it."""


def encode(msg: Msg) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes) -> Msg:
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:  # (a DecodeError too: first)
        try:
            kind = _envelope.decode(data).type
        except msgspec.ValidationError:
            raise InvalidMessage("", f"not a Roost message: {exc}") from exc
        if kind not in KNOWN_TYPES:
            raise UnknownMessage(kind, f"unknown message type {kind!r}") from exc
        raise InvalidMessage(kind, f"invalid {kind}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadMessage(str(exc)) from exc
