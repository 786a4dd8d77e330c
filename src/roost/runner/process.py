"""One instance's OS process: spawn, signal its group, pump its output, reap.

The thin adapter under the supervisor. Each instance runs in its own session
(so its own process group: stopping signals the whole group, gunicorn and its
workers alike) with PR_SET_PDEATHSIG=SIGKILL armed in the child before exec,
so if the runner is SIGKILLed its instances die with it instead of lingering
unsupervised.

Exit is detected with a pidfd (readable once the leader is a zombie), not by
waiting for the pipes to close: a background process the instance left behind
may hold them open forever. At that moment the leader is not yet reaped, so its
process group id cannot have been reused; whatever is left of the group is
SIGKILLed, then the leader is reaped. An instance never leaves orphans behind.
The runner spawns with Popen and reaps its instances itself, so neither
asyncio's child watcher nor uvloop's is involved (`roost.proc.spawn.popen`,
`roost.proc.wait.wait_group`).

Output is read in chunks (never `readline`, which fails on long lines) and
split by `LineSplitter`; the pumps run until EOF so a chatty process never
blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from roost.proc import spawn
from roost.proc.stop import signal_group
from roost.proc.wait import kill_and_reap, wait_group
from roost.runner.logbuffer import LineSplitter
from roost.tenant.launch import Prepared

TAIL_LINES = 30
# After the leader exits, how long to wait for the pipes to reach EOF (a
# process that escaped the group may still hold them open).
DRAIN_TIMEOUT_S = 2.0

LineSink = Callable[[str, str], None]  # (stream, line)


class Child:
    """A started instance process (leader of its own process group)."""

    def __init__(self, popen: subprocess.Popen[bytes], prepared: Prepared | None = None) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.returncode: int | None = None
        self.prepared = prepared
        # Set once reaped: the kernel OOM-killed something in its cgroup.
        self.oom_killed = False

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        prepared: Prepared | None = None,
    ) -> Child:
        """Start `argv` (`prepared.argv` when confined); raises OSError (or
        SubprocessError) when it cannot.

        Call it from the event loop's thread, never from a worker thread: the
        death signal fires when the *thread* that forked exits.
        """
        popen = spawn.popen(
            prepared.argv if prepared is not None else argv,
            env=env,
            # A sandbox sets its own working directory (bwrap --chdir).
            cwd="/" if prepared is not None and prepared.sandboxed else cwd,
            # Into its cgroup; umask; bwrap's signal shield.
            setup=spawn.child_setup(enter=prepared.preexec if prepared is not None else None),
        )
        return cls(popen, prepared)

    def signal_group(self, sig: int) -> bool:
        """Send `sig` to the instance's process group; False if it is gone."""
        if self.returncode is not None:
            return False  # reaped: the group id may belong to someone else now
        return signal_group(self.pid, sig)

    async def run(self, sink: LineSink) -> tuple[int, list[str]]:
        """Pump output into `sink` until the process exits; (returncode, output tail).

        The tail is the last lines of stderr, or of stdout when stderr was empty.
        If cancelled, the process group is killed and reaped before returning.
        """
        loop = asyncio.get_running_loop()
        tails: dict[str, deque[str]] = {
            "stdout": deque(maxlen=TAIL_LINES),
            "stderr": deque(maxlen=TAIL_LINES),
        }
        transports: list[asyncio.BaseTransport] = []
        pumps: list[asyncio.Task[None]] = []
        try:
            for name, pipe in (("stdout", self.popen.stdout), ("stderr", self.popen.stderr)):
                assert pipe is not None
                reader, transport = await _open_reader(loop, pipe)
                transports.append(transport)
                pumps.append(asyncio.create_task(_pump(reader, name, tails[name], sink)))
            # Kills whatever outlived the leader (its group id cannot have
            # been reused while it is a zombie), then reaps it.
            self.returncode = await wait_group(self.popen)
            self._finish()
            await asyncio.wait(pumps, timeout=DRAIN_TIMEOUT_S)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for transport in transports:
                transport.close()
            if self.returncode is None:  # cancelled before the process ended
                if self.prepared is not None:
                    self.prepared.kill_all()
                self.returncode = kill_and_reap(self.popen)
                self._finish()
        return self.returncode, list(tails["stderr"] or tails["stdout"])

    def _finish(self) -> None:
        """The leader is reaped: read the OOM counter, then end the cgroup."""
        if self.prepared is None:
            return
        self.oom_killed = self.prepared.oom_killed()
        self.prepared.finish()
        if self.prepared.sandboxed and self.returncode is not None:
            self.returncode = sandbox_returncode(self.returncode)


def sandbox_returncode(rc: int) -> int:
    """bwrap exits 128+N when its command died of signal N: say it as Popen would."""
    if 128 < rc < 128 + signal.NSIG:
        return -(rc - 128)
    return rc


async def _open_reader(
    loop: asyncio.AbstractEventLoop, pipe: IO[bytes]
) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    reader = asyncio.StreamReader(loop=loop)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader, transport


async def _pump(stream: asyncio.StreamReader, name: str, tail: deque[str], sink: LineSink) -> None:
    splitter = LineSplitter()
    while True:
        chunk = await stream.read(64 * 1024)
        lines = splitter.feed(chunk) if chunk else splitter.flush()
        for line in lines:
            tail.append(line)
            sink(name, line)
        if not chunk:
            return
