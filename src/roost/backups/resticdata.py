"""What restic says, read: the snapshot model, its JSON output, and what
its errors mean (pure functions over restic 0.14's output, for
`roost.backups.restic`, which runs the commands and re-exports these names).

An error's type says what went wrong (the list is restic.py's docstring);
`classify` reads it from the stderr of a failed command. `backup_summary`
is the summary line of `restic backup --json`: with a parent snapshot
(the newest of the same host and paths) files found unchanged are counted
in files_unmodified and not read again, which `Made` keeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from roost.backups.locations import Completed, Location, RepoError, Unreachable


class WrongPassword(RepoError):
    """Not our key's repository (or it was replaced)."""


class NotARepository(RepoError):
    """Nothing initialised at the location."""


class Locked(RepoError):
    """Another command holds the repository's lock."""

    retryable = True


class TimedOut(RepoError):
    """A command did not finish in its time."""

    retryable = True


class NoRoom(RepoError):
    """A local disk without room for what is about to be written."""


class PartialBackup(RepoError):
    """restic could not read some input (its snapshot is removed again)."""


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    tags: tuple[str, ...]
    paths: tuple[str, ...]
    hostname: str = ""
    original: str = ""  # the snapshot it was copied from ("" if made here)
    parent: str = ""  # the snapshot restic compared the files with ("" if none)

    def tag(self, key: str) -> str | None:
        """The value of a `key=value` tag."""
        for t in self.tags:
            if t.startswith(key + "="):
                return t[len(key) + 1 :]
        return None


@dataclass(frozen=True)
class Stats:
    total_size: int
    snapshots: int
    files: int = 0
    blobs: int = 0


@dataclass(frozen=True)
class Made:
    """A snapshot made by `backup`, and what restic's summary said of it:
    files it found as in the parent snapshot were not read again."""

    id: str
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    data_added: int = 0


@dataclass(frozen=True)
class Forgotten:
    kept: tuple[str, ...]
    removed: tuple[str, ...]


def parse_time(text: str) -> datetime:
    """restic's RFC 3339 time (nanoseconds, Z or an offset) as an aware datetime."""
    m = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise ValueError(f"not a restic time: {text!r}")
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}")


def parse_snapshots(stdout: bytes) -> list[Snapshot]:
    return [
        Snapshot(
            id=s["id"],
            time=parse_time(s["time"]),
            tags=tuple(s.get("tags") or ()),
            paths=tuple(s.get("paths") or ()),
            hostname=s.get("hostname", ""),
            original=s.get("original", ""),
            parent=s.get("parent", ""),
        )
        for s in json.loads(stdout or b"[]") or []
    ]


def backup_summary(stdout: bytes) -> dict[str, Any]:
    """The summary message of `restic backup --json`."""
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            msg = json.loads(line)
            if msg.get("message_type") == "summary":
                return dict(msg)
    raise RepoError("restic backup printed no summary", stdout.decode(errors="replace")[-2000:])


def check_problems(done: Completed) -> list[str]:
    """What a failed `restic check` found (pure)."""
    if done.returncode == 0:
        return []
    lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
    found = [ln for ln in lines if ln != "Fatal: repository contains errors"]
    return found or lines or [f"restic check exited {done.returncode}"]


def classify(loc: Location, what: str, stderr: str) -> RepoError | None:
    """The error a failed command's stderr names, when it names one (pure)."""
    if "wrong password or no key found" in stderr:
        return WrongPassword(f"{loc}: the repository does not open with backupd's password", stderr)
    if "Is there a repository at the following location?" in stderr:
        return NotARepository(f"{loc}: no repository there (not initialised)", stderr)
    if re.search(r"repository is already locked|unable to create lock", stderr):
        return Locked(f"{loc}: {what}: the repository is locked by another command", stderr)
    if "no space left on device" in stderr:
        return NoRoom(f"{loc}: {what}: the repository's disk is full", stderr)
    if re.search(
        r"dial tcp|no such host|connection refused|i/o timeout|network is unreachable|"
        r"TLS handshake timeout|transport endpoint is not connected|stale file handle",
        stderr,
        re.IGNORECASE,
    ):
        return Unreachable(f"{loc} is unreachable ({what})", stderr)
    return None


SSH_FAILED = re.compile(
    r"unable to start the sftp session|ssh command exited|subprocess ssh|connection lost|"
    r"file already closed|broken pipe",
    re.IGNORECASE,
)


def tag_arg(tags: Sequence[str]) -> str:
    for t in tags:
        if not t or "," in t or any(c.isspace() for c in t):
            raise ValueError(f"bad restic tag {t!r} (no commas or spaces)")
    return ",".join(tags)


def check_subset(read_data: bool | str) -> list[str]:
    if read_data is False:
        return []
    if read_data is True:
        return ["--read-data"]
    if not re.fullmatch(r"\d+/\d+|\d+(\.\d+)?%", read_data):
        raise ValueError(f"read_data subset {read_data!r}: give 'n/t' or 'p%'")
    return [f"--read-data-subset={read_data}"]


def relative(paths: Sequence[str]) -> list[str]:
    for p in paths:
        if not p or p.startswith("/") or ".." in Path(p).parts:
            raise ValueError(f"backup path {p!r} must be relative to the root, without '..'")
    return list(paths)


def made_from(snapshot_id: str, summary: dict[str, Any]) -> Made:
    """The snapshot `backup` made, with its summary's counts."""
    return Made(
        snapshot_id,
        files_new=int(summary.get("files_new", 0)),
        files_changed=int(summary.get("files_changed", 0)),
        files_unmodified=int(summary.get("files_unmodified", 0)),
        data_added=int(summary.get("data_added", 0)),
    )


def parse_forget(stdout: bytes) -> Forgotten:
    """`restic forget --json`: the snapshots kept and removed, every group."""
    groups = json.loads(stdout or b"[]") or []
    kept = [s["id"] for g in groups for s in g.get("keep") or ()]
    removed = [s["id"] for g in groups for s in g.get("remove") or ()]
    return Forgotten(tuple(kept), tuple(removed))


def parse_stats(stdout: bytes) -> Stats:
    """`restic stats --json`."""
    s = json.loads(stdout)
    return Stats(
        total_size=int(s.get("total_size", 0)),
        snapshots=int(s.get("snapshots_count", 0)),
        files=int(s.get("total_file_count", 0)),
        blobs=int(s.get("total_blob_count", 0)),
    )
