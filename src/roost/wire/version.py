"""The wire protocol's version, and how neighbouring releases talk.

Theory of operation. During a rolling upgrade daemons of release N and N+1
run in one cluster, so every message must mean the same to both:

- A field is only ever added, with a default. A receiver ignores fields it
  does not know (msgspec's default; no message sets
  `forbid_unknown_fields`), and one that lacks a field it knows decodes
  with the default. Removing a field, making one required, or changing its
  type waits for a protocol step (a release that no longer runs beside any
  release that needs the old form).
- A new message type is new to the older release: its RPC server answers it
  with an Error that names the type and both protocols (`codec.
  UnknownMessage`, retryable, since another replica may be newer), never a
  silent drop or a crash.
- Every connection's ZMTP handshake carries the sender's protocol and
  release as socket metadata (`X-Roost-Protocol`, `X-Roost-Version`), so a
  receiver knows what each message's sender speaks without a field in every
  message. Release 0.1.0 sent none: it reads as protocol 0.

`PROTOCOL` goes up by one whenever a release's messages change (a field or
a type added); tests/wire/test_compat.py checks every message against the
previous release's definitions, both ways.
"""

from __future__ import annotations

import zmq

from roost import __version__

PROTOCOL = 1
PROTOCOL_PROPERTY = "X-Roost-Protocol"
VERSION_PROPERTY = "X-Roost-Version"


def handshake_metadata() -> list[bytes]:
    """The ZMQ_METADATA properties a socket sends in its handshake (each set alone)."""
    return [
        f"{PROTOCOL_PROPERTY}:{PROTOCOL}".encode(),
        f"{VERSION_PROPERTY}:{__version__}".encode(),
    ]


def peer_protocol(frame: zmq.Frame) -> int:
    """The protocol of the peer that sent `frame` (0: it said none, as 0.1.0)."""
    try:
        text = frame.get(PROTOCOL_PROPERTY)
    except zmq.ZMQError:  # no such property on the connection
        return 0
    return int(text) if isinstance(text, str) and text.isdigit() else 0


def speaks(peer: int) -> str:
    """Both sides' protocols, for a refusal's message."""
    said = f"protocol {peer}" if peer else "protocol 0 (0.1.0, or no handshake metadata)"
    return f"this daemon is roost {__version__} (protocol {PROTOCOL}); the sender {said}"
