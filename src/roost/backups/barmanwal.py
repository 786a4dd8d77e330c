"""The WAL Barman holds for a server, read: which segments there are,
the commit times in them, the newest commit (the window's end), and a
recovery's WAL topped up with the segments after the ones Barman copied.
`roost.backups.barman` runs Barman; this reads what it keeps, with
pg_waldump.

The window's end. The latest recoverable time is the time of the newest
commit (or abort) record in the WAL Barman holds, read with pg_waldump from
the newest segments, including the streaming `.partial` one: a recovery to
time T stops at the first commit after T, and when no commit after T has
been received PostgreSQL 15 refuses to finish ("recovery ended before
configured recovery target was reached").

The partial segment. Barman archives a streamed segment only once
pg_receivewal has moved on to the next one, so the last seconds live in
streaming/<segment>.partial. `barman recover` copies archived WAL only;
after it, `top_up` adds `barman get-wal -P`'s copies (-P: also serve the
.partial file, under its segment's name) of the segments that follow,
until one holds a commit after the target. So the recovery point is what
pg_receivewal has received, typically well under a second behind the
source, with no WAL switch forced on it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from roost.backups.barmanconf import commit_times
from roost.backups.pgfacts import PG_BIN, pg_tool, run_tool

# pg_waldump of one 16 MB segment.
WALDUMP_TIMEOUT_S = 300.0
# How many of the newest segments `last_commit` reads.
SCAN_SEGMENTS = 4
# Listing the WAL again when it moved while it was read.
SCAN_TRIES = 5

SEGMENT = re.compile(r"^[0-9A-F]{24}$")

# (segment name, directory): `barman get-wal -P` of that segment into it
GetWal = Callable[[str, Path], Awaitable[object]]


class WalMoving(RuntimeError):
    """The server's WAL kept changing under every read of it."""


def wal_files(server_dir: Path) -> list[tuple[str, Path]]:
    """(segment name, file) of every WAL segment held, streamed or archived,
    oldest first (a streamed one where both are)."""
    found: dict[str, Path] = {}
    for p in (server_dir / "wals").glob("*/*"):
        if SEGMENT.match(p.name):
            found[p.name] = p
    for p in (server_dir / "streaming").glob("*"):
        name = p.name.removesuffix(".partial")
        if SEGMENT.match(name):
            found[name] = p
    return sorted(found.items())


async def commits_in(name: str, path: Path, pg_bin: Path = PG_BIN) -> list[datetime]:
    """The commit (and abort) times in one segment, `path` (named `name`)."""
    with tempfile.TemporaryDirectory(prefix="roost-wal-") as tmp:
        if path.name != name:  # a .partial: pg_waldump wants a segment's name
            copy = Path(tmp) / name
            await asyncio.to_thread(shutil.copyfile, path, copy)
            path = copy
        argv = [pg_tool("pg_waldump", pg_bin), "--rmgr=Transaction", str(path)]
        # Its status is 1 at the end of the WAL written so far: expected.
        _, out = await run_tool(argv, env={"TZ": "UTC"}, timeout=WALDUMP_TIMEOUT_S)
    return commit_times(out)


async def last_commit(server_dir: Path, pg_bin: Path = PG_BIN) -> datetime | None:
    """The newest commit (or abort) time in the WAL held (None: none yet)."""
    for _ in range(SCAN_TRIES):
        try:
            for name, path in reversed(wal_files(server_dir)[-SCAN_SEGMENTS:]):
                times = await commits_in(name, path, pg_bin)
                if times:
                    return max(times)
            return None
        except FileNotFoundError:
            # pg_receivewal renamed the .partial segment (or Barman
            # archived one) while we read it: list the WAL again.
            continue
    raise WalMoving(f"{server_dir.name}: its WAL kept moving while it was read")


async def top_up(
    server_dir: Path, wal_dir: Path, target: datetime, get_wal: GetWal, pg_bin: Path = PG_BIN
) -> None:
    """Add to a recovery's `wal_dir` the segments after those copied there
    (the streaming .partial included, through `get_wal`) until one holds a
    commit after `target`, where the recovery will stop."""
    copied = sorted(p.name for p in wal_dir.glob("*") if SEGMENT.match(p.name))
    if copied and any(
        t > target for t in await commits_in(copied[-1], wal_dir / copied[-1], pg_bin)
    ):
        return
    last = copied[-1] if copied else ""
    for name, _ in wal_files(server_dir):
        if name <= last:
            continue
        staging = wal_dir / ".topup"
        staging.mkdir(exist_ok=True)
        try:
            await get_wal(name, staging)
            os.replace(staging / name, wal_dir / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if any(t > target for t in await commits_in(name, wal_dir / name, pg_bin)):
            return
