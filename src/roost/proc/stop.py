"""Stopping children (trio's `_subprocess.py` rule): a signal to the child's
process group, a grace period, then SIGKILL to the group, and the stragglers
the leader left in its group go too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False if it is gone (or not ours)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def terminate(
    proc: asyncio.subprocess.Process, grace: float, sig: int = signal.SIGTERM
) -> int:
    """`sig` (TERM) to the child's process group, wait `grace`, then KILL it."""
    if proc.returncode is None:
        signal_group(proc.pid, sig)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that arrives just as the process exits.
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    # Stragglers the child left in its group (e.g. gunicorn workers) go too.
    signal_group(proc.pid, signal.SIGKILL)
    return proc.returncode if proc.returncode is not None else -signal.SIGKILL


def kill_descendants() -> list[str]:
    """SIGKILL every process below this one; returns what they were (name[pid])."""
    import psutil

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    names = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            names.append(f"{' '.join(p.cmdline()[:3]) or p.name()}[{p.pid}]")
            p.kill()
    psutil.wait_procs(procs, timeout=5)
    return names
