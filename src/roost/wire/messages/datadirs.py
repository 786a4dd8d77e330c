"""App data directories pulled by runners (the one-copy layout).

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

from roost.wire.messages.base import Msg

# ---------------------------------------------------------------- app data directories


class DataVersion(Msg, frozen=True, kw_only=True):
    app: str


class DataVersionReply(Msg, frozen=True, kw_only=True):
    app: str
    # Changes whenever the canonical copy changes (0: no data yet).
    version: int = 0


class DataPull(Msg, frozen=True, kw_only=True):
    app: str
    # The version the caller has; the reply carries no archive when unchanged.
    have_version: int = 0


class DataArchive(Msg, frozen=True, kw_only=True):
    app: str
    version: int
    unchanged: bool = False
    # tar.gz of the whole directory (regular files and directories only).
    archive: bytes = b""
