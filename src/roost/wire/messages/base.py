"""The base of every wire message and the generic replies.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

from typing import Literal

import msgspec

InstanceState = Literal["pending", "starting", "up", "crashed", "backoff", "stopping", "stopped"]


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every wire message (tagged by class name).

    msgspec does not carry `kw_only` over to subclasses, so every message
    declares `class X(Msg, frozen=True, kw_only=True)` itself.
    """


# ---------------------------------------------------------------- generic replies


class Ok(Msg, frozen=True, kw_only=True):
    detail: str = ""


class Error(Msg, frozen=True, kw_only=True):
    message: str
    retryable: bool = False


class Ping(Msg, frozen=True, kw_only=True):
    pass
