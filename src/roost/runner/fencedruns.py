"""The fenced runs (cron) this runner started, kept on disk across restarts.

The highest fencing token seen on a RunStart, and the session ids of the
last KEEP fenced runs, in DATA/runner/fenced-runs.json (written atomically,
before the run starts). A runner that restarts has lost its sessions; what
it keeps here still makes it refuse a RunStart from a deposed lease holder
and a second start of a session that already ran (`fencing.judge_run`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from pathlib import Path

from roost.runner.fencing import Verdict, judge_run

log = logging.getLogger("roost.runner")

KEEP = 4096


class FencedRuns:
    def __init__(self, path: Path, keep: int = KEEP) -> None:
        self.path = path
        self.fence = 0
        self.sessions: deque[str] = deque(maxlen=keep)
        self._known: set[str] = set()
        self._lock = asyncio.Lock()
        try:
            saved = json.loads(path.read_text())
            self.fence = int(saved["fence"])
            self.sessions.extend(str(s) for s in saved["sessions"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unreadable: start afresh, but say so (its tokens are forgotten).
            log.warning("%s is unreadable (%s); starting without it", path, exc)
        self._known = set(self.sessions)

    def judge(self, fence: int, session: str, assignment_fence: int = 0) -> Verdict:
        return judge_run(max(self.fence, assignment_fence), self._known, fence, session)

    async def record(self, fence: int, session: str) -> None:
        """Note a run about to start; returns once it is on disk."""
        self.fence = max(self.fence, fence)
        if len(self.sessions) == self.sessions.maxlen:
            self._known.discard(self.sessions[0])
        self.sessions.append(session)
        self._known.add(session)
        text = json.dumps({"fence": self.fence, "sessions": list(self.sessions)})
        async with self._lock:  # writes in order: the last one holds everything
            await asyncio.to_thread(_write, self.path, text)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
