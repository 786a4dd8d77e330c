"""Exec sessions relayed by a gateway: `run` on a runner, rsync/scp/sftp on a servicehost.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from roost.wire.messages.base import Msg
from roost.wire.messages.runners import InstanceAssignment

# ---------------------------------------------------------------- exec sessions
#
# A byte-stream session with a process on a runner (`run`) or a servicehost
# (rsync/scp/sftp on an app's data directory), relayed by a gateway. Every
# request is idempotent, so the RpcClient's retries are harmless: input carries
# its offset in the input stream; output is numbered and stays buffered until a
# poll acknowledges it; a session nobody polls for a while is killed.


class RunStart(Msg, frozen=True, kw_only=True):
    """Start `command` (a shell command line) in the assignment's environment.

    kind "shell": `/bin/sh -c command` (an interactive shell when empty);
    kind "django": `django-admin command` (or `python manage.py command` in
    the [django] base when it has a manage.py).
    """

    session: str
    assignment: InstanceAssignment
    command: str = ""
    kind: Literal["shell", "django"] = "shell"
    pty: bool = False
    term: str = ""
    rows: int = 24
    cols: int = 80
    # The scheduler lease's fencing token when the lease holder sends it (cron);
    # 0 for a `run`. A fenced run is refused when older than a token the runner
    # has seen, starts a session id at most once, and is not cut when nobody
    # polls it: its controller may have died, and the next lease holder
    # collects its output and exit status.
    fence: int = 0


class DataStart(Msg, frozen=True, kw_only=True):
    """Run a file-transfer server on `app`'s data directory (servicehost).

    tool "rsync": `rsync --server [--sender] <options> . <paths>`;
    tool "scp": `scp -t|-f <options> <path>` (options e.g. "-t", "-r");
    tool "sftp": an SFTP server whose root shows the directories of `apps`
    (`app` is unused; what a client wants is in its SFTP requests).
    Paths are relative to the data directory ("" or "." for its root).
    """

    session: str
    app: str
    tool: Literal["rsync", "scp", "sftp"]
    options: list[str] = []
    paths: list[str] = []
    apps: list[str] = []
    # The apps' numeric ids: the tools run as the app's own user, who owns
    # its live tree (roost.datadir); 0 or missing (an older gateway): the
    # servicehost's shared tools user.
    app_id: int = 0
    app_ids: dict[str, int] = {}
    # The apps' own data quotas in MiB (AppGrant.data_quota_mb; 0 or
    # missing: the servicehost's ROOST_DATA_QUOTA_MB).
    data_quota_mb: int = 0
    data_quotas: dict[str, int] = {}


class ExecInput(Msg, frozen=True, kw_only=True):
    session: str
    # Offset of `data` in the session's input stream (resends are ignored).
    offset: int
    data: bytes = b""
    eof: bool = False


class ExecResize(Msg, frozen=True, kw_only=True):
    session: str
    rows: int
    cols: int


class ExecSignal(Msg, frozen=True, kw_only=True):
    session: str
    signal: str  # "INT", "TERM", "HUP", "KILL", ...


class ExecPoll(Msg, frozen=True, kw_only=True):
    """Output after `after` (chunks up to it are acknowledged and dropped);
    waits up to `wait_s` for something new."""

    session: str
    after: int = 0
    wait_s: float = 1.0


class ExecChunk(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    stream: Literal["stdout", "stderr"] = "stdout"
    data: bytes


class ExecOutput(Msg, frozen=True, kw_only=True):
    session: str
    chunks: list[ExecChunk] = []
    # Set once the process has exited and every chunk has been sent.
    exit_status: int | None = None
    exit_signal: str = ""


class ExecClose(Msg, frozen=True, kw_only=True):
    """The client is gone: stop the process (TERM, grace, KILL) and forget it."""

    session: str
