"""Starting a server process: as the service user, logging to a file, owned."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from roost.proc import run
from roost.proc import spawn as proc
from roost.servicehost.user import ServiceUser

# The servers get a fixed, small environment: nothing of the daemon's
# (which may hold secrets) leaks into them, and messages are not localised.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


async def spawn(
    argv: Sequence[str], user: ServiceUser, log_file: Path, cwd: Path
) -> asyncio.subprocess.Process:
    """Start `argv` as `user` in `cwd`, output appended to `log_file`."""
    return await proc.start_logged(argv, log_file, env=BASE_ENV, cwd=cwd, setup=user.setup())


async def run_tool(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float,
    user: ServiceUser | None = None,
    cwd: Path | None = None,
) -> tuple[int, str]:
    """Run a one-off tool (initdb, pg_dump ...) to completion; (status, output)."""
    done = await run.run_tool(
        argv, timeout=timeout, env={**BASE_ENV, **(env or {})}, cwd=cwd,
        setup=user.setup() if user is not None else None, merge_stderr=True,
    )  # fmt: skip
    return done.returncode, done.output
