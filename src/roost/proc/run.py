"""Running a one-off tool to completion: the one way a role runs initdb,
pg_dump, restic, git, redis-cli ... with a deadline.

Its output is captured (stdout and stderr apart, or stderr merged into
stdout). Out of time, or its caller cancelled, the tool's process group gets
`stop_signal`, a grace period, then SIGKILL (`roost.proc.stop.terminate`),
shielded from the cancellation: nothing the tool started outlives its
caller. The environment is exactly `env` (None: the caller's own); each role
passes its fixed one, so no secret of the daemon's leaks into a tool.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from roost.proc.spawn import ChildSetup, start
from roost.proc.stop import terminate


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes  # all of the output when stderr was merged into it
    stderr: str  # "" when merged

    @property
    def output(self) -> str:
        """stdout as text (everything the tool printed, when merged)."""
        return self.stdout.decode(errors="replace")


async def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    setup: ChildSetup | None = None,
    merge_stderr: bool = False,
    stop_signal: int = signal.SIGTERM,
    grace_s: float = 1.0,
) -> Completed:
    """Run `argv` to completion; TimeoutError after `timeout` seconds.

    Out of time or cancelled, the tool's group gets `stop_signal`, `grace_s`
    to go, then SIGKILL (a tool that cleans up on a signal, such as restic
    removing its lock on SIGINT, is given the signal and the time it needs).
    """
    tool = await start(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        setup=setup,
    )
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
        # cancellation that arrives just as the tool exits (roost.aio).
        async with asyncio.timeout(timeout):
            out, err = await tool.communicate()
    except BaseException:
        await asyncio.shield(terminate(tool, grace_s, stop_signal))
        raise
    code = tool.returncode if tool.returncode is not None else -1
    return Completed(code, out, (err or b"").decode(errors="replace"))
