"""Streaming a Barman server's WAL with pg_receivewal, without `barman receive-wal`.

`barman receive-wal SERVER` is a whole Python process (~30 MB resident with
Barman's imports, issue 21) that checks a few things, runs pg_receivewal in
the foreground and waits on it for as long as WAL streams. backupd already
supervises children, so it runs pg_receivewal itself, as Barman 3.4 would
(barman.wal_archiver.StreamingWalArchiver.receive_wal):

  - the same command line (`receive_argv`): the server's streaming_conninfo
    with application_name=barman_receive_wal and an empty search_path,
    --verbose --no-loop --no-password, the server's streaming directory
    and its replication slot (never --synchronous: Roost's servicehosts
    name no synchronous standby);
  - the same repair first (`odd_partial`): a `.partial` segment that is
    neither empty nor a whole segment (a receiver killed before it padded
    the file) is emptied, which is safe since pg_receivewal pads a segment
    to its full size before writing into it;
  - Barman's own lock (`.SERVER-receive-wal.lock` in barman_home, flock,
    holding the receiver's pid), so Barman sees it as its receive-wal:
    `barman check` ("receive-wal running") and `barman backup` pass,
    `barman receive-wal --reset` refuses while it runs. The lock's
    descriptor is pg_receivewal's own, so it is released when pg_receivewal
    exits however it ends, and no other process can take it meanwhile.

Barman itself still makes and drops the slot, resets the position, takes
base backups and recovers; those are short-lived commands.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable
from pathlib import Path

from roost.backups.barmanconf import conninfo_of
from roost.backups.pgfacts import PG_BIN
from roost.wire.messages import PgSource

# What Barman names its receiver to PostgreSQL (its streaming_archiver_name).
APPLICATION_NAME = "barman_receive_wal"
# A WAL segment's name, then ".partial" (barman.xlog.is_partial_file).
_PARTIAL = re.compile(r"^[0-9A-F]{24}\.partial$")


def receive_argv(
    source: PgSource, passfile: Path, streaming: Path, slot: str, pg_bin: Path = PG_BIN
) -> list[str]:
    """pg_receivewal's command line, as `barman receive-wal` builds it."""
    conninfo = conninfo_of(source, passfile)
    dbname = f"{conninfo} application_name={APPLICATION_NAME} options=-csearch_path="
    return [
        str(pg_bin / "pg_receivewal"),
        f"--dbname={dbname}",
        "--verbose",
        "--no-loop",
        "--no-password",
        f"--directory={streaming}",
        f"--slot={slot}",
    ]


def odd_partial(names: Iterable[str], size_of: dict[str, int], segment: int) -> str | None:
    """The newest `.partial` segment when its size is neither 0 nor `segment`
    (Barman empties it before streaming again); None when all is well."""
    partials = sorted(n for n in names if _PARTIAL.match(n))
    if not partials:
        return None
    last = partials[-1]
    return None if size_of.get(last, 0) in (0, segment) else last


def repair_partial(streaming: Path, segment: int) -> str | None:
    """Empty the streaming directory's odd `.partial` segment, if any; its name."""
    sizes = {p.name: p.stat().st_size for p in streaming.glob("*.partial")}
    name = odd_partial(sizes, sizes, segment)
    if name is not None:
        (streaming / name).open("wb").close()
    return name


def wal_gone(said: str) -> bool:
    """Whether pg_receivewal was told the WAL it asks for is removed: started
    again, it asks for the same segment, so it can never go on (pure)."""
    return "has already been removed" in said


class ReceiverBusy(RuntimeError):
    """Another receiver (a `barman receive-wal`) streams this server."""


def lock_path(barman_home: Path, server: str) -> Path:
    """Barman's receive-wal lock for `server` (barman.lockfile.ServerWalReceiveLock)."""
    return barman_home / f".{server}-receive-wal.lock"


def take_lock(barman_home: Path, server: str) -> int:
    """Barman's receive-wal lock, taken (a descriptor to hand to the receiver
    and then close); ReceiverBusy when another process holds it."""
    path = lock_path(barman_home, server)
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ReceiverBusy(f"another receive-wal streams {server} (it holds {path})") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_owner(fd: int, pid: int) -> None:
    """The lock's owner as Barman reads it (its pid, alone on the first line)."""
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{pid}\n".encode("ascii"))
    os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))
