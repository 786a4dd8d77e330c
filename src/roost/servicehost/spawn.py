"""Starting a server process: as the service user, logging to a file, owned."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from roost import aio
from roost.proc import spawn as proc
from roost.proc.stop import terminate
from roost.servicehost.user import ServiceUser

# The servers get a fixed, small environment: nothing of the daemon's
# (which may hold secrets) leaks into them, and messages are not localised.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


async def spawn(
    argv: Sequence[str], user: ServiceUser, log_file: Path, cwd: Path
) -> asyncio.subprocess.Process:
    """Start `argv` as `user` in `cwd`, output appended to `log_file`."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return await proc.start(
            argv, env=BASE_ENV, cwd=cwd, stdout=fd, stderr=subprocess.STDOUT, setup=user.setup()
        )
    finally:
        os.close(fd)


async def run_tool(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float,
    user: ServiceUser | None = None,
    cwd: Path | None = None,
) -> tuple[int, str]:
    """Run a one-off tool (initdb, pg_dump ...) to completion; (status, output)."""
    tool = await proc.start(
        argv,
        env={**BASE_ENV, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        setup=user.setup() if user is not None else None,
    )
    try:
        out, _ = await aio.wait_for(tool.communicate(), timeout)
    except BaseException:
        await asyncio.shield(terminate(tool, 1.0))
        raise
    return tool.returncode if tool.returncode is not None else -1, out.decode(errors="replace")
