"""restic, as backupd keeps history with it: an async adapter over restic 0.14.

Theory of operation. A `Repo` is a location (`roost.backups.locations`) plus
the repositories' password file, DATA/backupd/keys/restic.key (made once by
`init`, 0600, random). Every method runs one restic command with a timeout
and a fixed environment; the password reaches restic only as that file's
path, never on a command line, in the environment or in a log. What restic
printed on stderr goes into the error, whose type says what went wrong:

  Unreachable      the location's network or host (retryable);
  TimedOut, Locked a command too slow, or another holding the lock (retryable);
  HostKeyRefused, AuthRefused   an SFTP host's key or our key (the operator);
  WrongPassword    this is not our key's repository (or it was replaced);
  NotARepository   nothing initialised there;
  NoRoom           a local disk without room for what is about to be written;
  PartialBackup    restic could not read some input: the snapshot it made is
                   removed again, so a partial backup is never taken as good.

A damaged repository is not an exception: `check` returns its problems.
(The errors, the snapshot model and the reading of restic's output are
roost.backups.resticdata's, pure; this module runs the commands.)

Snapshots are made from a directory with a relative layout (`backup(root)`
runs in `root` and saves "."): a restore puts the files straight into its
target, wherever the staging directory was. Times are UTC (restic runs with
TZ=UTC), the zone `roost.backups.retention` counts days, weeks and months in.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from signal import SIGINT

from roost.backups.layout import Layout
from roost.backups.locations import (
    AuthRefused,
    Completed,
    HostKeyRefused,
    Location,
    RepoError,
    Unreachable,
    probe_sftp,
    restic_env,
    restic_options,
    run_tool,
)
from roost.backups.resticdata import (
    SSH_FAILED,
    Forgotten,
    Locked,
    Made,
    NoRoom,
    NotARepository,
    PartialBackup,
    Snapshot,
    Stats,
    TimedOut,
    WrongPassword,
    backup_summary,
    check_problems,
    check_subset,
    classify,
    made_from,
    parse_forget,
    parse_snapshots,
    parse_stats,
    relative,
    tag_arg,
)

# The model and the errors live in resticdata; their names are this module's too.
__all__ = [
    "AuthRefused",
    "Forgotten",
    "HostKeyRefused",
    "Locked",
    "Made",
    "NoRoom",
    "NotARepository",
    "PartialBackup",
    "Repo",
    "RepoError",
    "Snapshot",
    "Stats",
    "TimedOut",
    "Unreachable",
    "WrongPassword",
    "ensure_password",
]

# What a local repository's disk keeps free beyond what a write needs.
DEFAULT_MIN_FREE = 1 << 30


def ensure_password(layout: Layout) -> Path:
    """The repositories' password file, made (0600, random) if missing."""
    path = layout.restic_password
    layout.keys.mkdir(parents=True, exist_ok=True)
    layout.keys.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        path.chmod(0o600)
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return path


def tree_size(root: Path, paths: Sequence[str]) -> int:
    """Bytes of regular files under root/paths (symlinks not followed): the
    most a backup of them adds, before compression and deduplication."""
    total = 0
    for p in paths:
        top = root / p
        if top.is_symlink() or not top.is_dir():
            total += top.lstat().st_size if top.exists() or top.is_symlink() else 0
            continue
        for d, _, files in os.walk(top):
            for name in files:
                try:
                    total += os.lstat(os.path.join(d, name)).st_size
                except FileNotFoundError:
                    pass
    return total


def free_bytes(path: Path) -> int:
    """Free bytes on the disk `path` is (or will be) on."""
    p = path
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


# ---------------------------------------------------------------- the adapter


@dataclass
class Repo:
    """One restic repository (see the module doc)."""

    location: Location
    layout: Layout
    min_free_bytes: int = DEFAULT_MIN_FREE
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    restic: str = "restic"
    # Set once the repository is made or found (the daemon opens it beside
    # serving): every command but init's own waits for it. None: open now.
    opened: asyncio.Event | None = field(default=None, repr=False, compare=False)
    # A local repository with nothing there yet is made by the first command
    # that needs it (`defer_init`), not at every start: `restic init`
    # calibrates its key derivation, ~1-2 s of CPU each time a platform
    # starts, most of which never back up before they stop.
    init_pending: bool = field(default=False, repr=False, compare=False)
    _init_lock: asyncio.Lock = field(
        default_factory=asyncio.Lock, init=False, repr=False, compare=False
    )

    def __str__(self) -> str:
        return str(self.location)

    def set_opened(self) -> None:
        if self.opened is not None:
            self.opened.set()

    @property
    def cache_dir(self) -> Path:
        return self.layout.root / "cache"

    # -- running restic

    def _argv(self, args: Sequence[str], source: Repo | None = None) -> list[str]:
        pw = self.layout.restic_password
        if not pw.exists():
            raise RepoError(
                f"{self}: no repository password at {pw} (init makes one; to read an existing "
                "repository, put back the restic.key kept with it)"
            )
        argv = [self.restic, "-r", self.location.repository, "--password-file", str(pw)]
        argv += ["--cache-dir", str(self.cache_dir)]
        for r in (self, source):
            if r is not None and r.location.kind == "sftp":
                argv += restic_options(r.location, r.layout)
                break
        return argv + list(args)

    async def _run(
        self,
        args: Sequence[str],
        *,
        timeout: float,
        cwd: Path | None = None,
        source: Repo | None = None,
        ok: tuple[int, ...] = (0,),
        opening: bool = False,
    ) -> Completed:
        for r in (self, source) if not opening else ():
            if r is not None and r.opened is not None:
                await r.opened.wait()
            if r is not None and r.init_pending:
                await r._init_now()
        what = f"restic {args[0]}"
        env = restic_env(self.location, self.environ)
        if source is not None:
            env |= restic_env(source.location, source.environ)
        try:
            done = await run_tool(
                self._argv(args, source), timeout=timeout, env=env, cwd=cwd, stop_signal=SIGINT
            )
        except TimeoutError:
            raise TimedOut(f"{self}: {what} did not finish in {timeout:.0f}s") from None
        if done.returncode not in ok:
            raise await self._error(what, done, source)
        return done

    async def _error(self, what: str, done: Completed, source: Repo | None) -> RepoError:
        found = classify(self.location, what, done.stderr)
        if found is not None:
            return found
        if SSH_FAILED.search(done.stderr):
            for r in (self, source):
                if r is not None and r.location.kind == "sftp":
                    why = await probe_sftp(r.location, r.layout)
                    return why or Unreachable(f"{r}: the SFTP session failed", done.stderr)
        return RepoError(f"{self}: {what} failed (exit {done.returncode})", done.stderr)

    async def _ensure_room(self, need: int, where: Path | None = None) -> None:
        """Refuse before writing `need` bytes to a local disk without that
        much room above `min_free_bytes` (a full disk mid-write helps no one)."""
        target = where or (self.location.local_dir if self.location.kind == "local" else None)
        if target is None:
            return
        free = await asyncio.to_thread(free_bytes, target)
        if free < need + self.min_free_bytes:
            raise NoRoom(
                f"{self}: {free} bytes free on the disk of {target}, and this needs {need} "
                f"plus the {self.min_free_bytes} kept free; nothing was written"
            )

    # -- operations

    async def init(self, *, chunker_from: Repo | None = None, timeout: float = 120.0) -> bool:
        """Make the repository if it is not there (True if it was made now).
        `chunker_from`: share that repository's chunking, so copies between
        them deduplicate."""
        ensure_password(self.layout)
        if not self._nothing_there():
            try:
                await self._run(["cat", "config"], timeout=timeout, opening=True)
                return False
            except NotARepository:
                pass
        await self._ensure_room(0)
        args = ["init"]
        if chunker_from is not None:
            args += ["--from-repo", chunker_from.location.repository, "--copy-chunker-params"]
            args += ["--from-password-file", str(chunker_from.layout.restic_password)]
        await self._run(args, timeout=timeout, source=chunker_from, opening=True)
        return True

    def defer_init(self) -> bool:
        """Leave a local repository with nothing there to the first command
        that needs it (True), once its password is made and its directory
        can be written; False where there is something to open (or it is
        not local): `init` now. An unusable directory is a RepoError here,
        at the start, as `init` would say it."""
        if self.location.kind != "local" or not self._nothing_there():
            return False
        ensure_password(self.layout)
        where = self.location.local_dir
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RepoError(f"{self}: its directory cannot be made: {exc}") from None
        if not os.access(where, os.W_OK | os.X_OK):
            raise RepoError(f"{self}: its directory {where} cannot be written")
        self.init_pending = True
        return True

    async def _init_now(self) -> None:
        async with self._init_lock:  # two jobs at once make it once
            if self.init_pending:
                await self.init()
                self.init_pending = False

    def _nothing_there(self) -> bool:
        """A local repository's directory is missing or empty: nothing to
        open, so no `restic cat config` (it derives the key, ~0.9 s here,
        only to say so: a fresh platform's backupd waited on it to start)."""
        if self.location.kind != "local":
            return False
        try:
            with os.scandir(self.location.local_dir) as entries:
                return next(entries, None) is None
        except FileNotFoundError:
            return True
        except OSError:
            return False  # not a directory, unreadable: restic's own error says so

    async def snapshot(
        self,
        root: Path,
        paths: Sequence[str] = (".",),
        *,
        tags: Sequence[str],
        host: str = "backupd",
        time: datetime | None = None,
        expect_bytes: int | None = None,
        exclude: Sequence[Path] = (),
        timeout: float = 3600.0,
    ) -> Made:
        """Snapshot `paths` (relative to `root`, saved relative) with `tags`.
        `expect_bytes`: what it may add (default: the input's size, the most
        it can add). restic compares the files with the newest snapshot of
        the same `host` and paths before `time` (their parent) and reads only
        those whose size, times or inode differ: paths kept the same from one
        backup to the next are what makes a second backup of a big, mostly
        unchanged tree (Barman's) cheap. `exclude`: absolute glob patterns
        of what to leave out (restic's --exclude)."""
        rel = relative(paths)
        absent = [p for p in rel if not (root / p).exists() and not (root / p).is_symlink()]
        if absent:
            # restic would skip them and call the backup a success.
            raise FileNotFoundError(f"backup input missing under {root}: {', '.join(absent)}")
        args = ["backup", "--json", "-q", "--host", host, "--tag", tag_arg(tags)]
        if time is not None:
            args += ["--time", time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")]
        for pattern in exclude:
            if not pattern.is_absolute():
                raise ValueError(f"an exclude pattern must be absolute: {pattern}")
            args += ["--exclude", str(pattern)]
        if expect_bytes is None and self.location.kind == "local":
            expect_bytes = await asyncio.to_thread(tree_size, root, rel)
        await self._ensure_room(expect_bytes or 0)
        # Exit 3: a snapshot was made but some input could not be read.
        done = await self._run([*args, "--", *rel], timeout=timeout, cwd=root, ok=(0, 3))
        summary = backup_summary(done.stdout)
        short = summary["snapshot_id"]
        made = await self._ids_from(short, tags)
        if len(made) != 1:
            raise RepoError(f"{self}: snapshot {short} is not found once after its backup")
        if done.returncode == 3:
            await self.remove(made)
            raise PartialBackup(f"{self}: some of {root} could not be read", done.stderr)
        return made_from(made[0], summary)

    async def _ids_from(self, short: str, tags: Sequence[str]) -> list[str]:
        """The ids of the snapshots with `tags` that begin with `short` (what
        restic 0.14's backup prints). A local repository names each snapshot's
        file by its id: when one file there begins with it, that is the id,
        without another restic command (a key derivation and a lock)."""
        if self.location.kind == "local":
            names = await asyncio.to_thread(
                lambda: [p.name for p in (self.location.local_dir / "snapshots").iterdir()]
            )
            found = [n for n in names if n.startswith(short)]
            if len(found) == 1:
                return found
        return [s.id for s in await self.snapshots(tags) if s.id.startswith(short)]

    async def snapshots(
        self, tags: Sequence[str] = (), *, timeout: float = 120.0
    ) -> list[Snapshot]:
        """Snapshots having every one of `tags`, oldest first (none in a
        local repository not made yet: nothing to derive a key for)."""
        if self.location.kind == "local" and self._nothing_there():
            return []
        args = ["snapshots", "--json"] + (["--tag", tag_arg(tags)] if tags else [])
        done = await self._run(args, timeout=timeout)
        return sorted(parse_snapshots(done.stdout), key=lambda s: s.time)

    async def restore(
        self,
        snapshot_id: str,
        target: Path,
        *,
        include: Sequence[str] = (),
        size: int = 0,
        timeout: float = 3600.0,
    ) -> None:
        """Put the snapshot's files into `target` (made if missing), after
        checking that the target's disk has room for them. `size`: their
        bytes where the caller knows them (a backup's record: what was read
        for it, never less than the snapshot holds), saving a `restic stats`
        (a key derivation, ~0.3 s of CPU) before each drill; 0 asks restic."""
        if size <= 0:
            got = await self.stats([snapshot_id], mode="restore-size", timeout=timeout)
            size = got.total_size
        await self._ensure_room(size, target)
        args = ["restore", snapshot_id, "--target", str(target)]
        for pattern in include:
            args += ["--include", pattern]
        await self._run(args, timeout=timeout)

    async def dump(self, snapshot_id: str, path: str, *, timeout: float = 300.0) -> bytes:
        """One file's bytes from a snapshot (e.g. its facts.json)."""
        done = await self._run(["dump", snapshot_id, path], timeout=timeout)
        return done.stdout

    async def check(
        self, read_data: bool | str = False, *, timeout: float = 6 * 3600.0
    ) -> list[str]:
        """The repository's own integrity check; its problems ([] when
        sound). `read_data`: True reads every pack back, "n/t" or "p%" a
        subset. A location that cannot be reached raises instead."""
        args = ["check", *check_subset(read_data)]
        try:
            await self._run(args, timeout=timeout)
        except RepoError as exc:
            if type(exc) is not RepoError:
                raise  # unreachable, locked, not ours: not a verdict on the data
            return check_problems(Completed(1, b"", exc.stderr))
        return []

    async def forget(
        self,
        tags: Sequence[str],
        keep_flags: Sequence[str],
        *,
        dry_run: bool = False,
        timeout: float = 600.0,
    ) -> Forgotten:
        """Apply `keep_flags` (`retention.restic_forget_flags`) to the one
        group of snapshots having every one of `tags` (e.g. app=X, kind=Y).
        Only forgets: `prune` frees the space."""
        if not tags or not keep_flags:
            raise ValueError("forget needs tags to choose the group and keep flags")
        args = ["forget", "--json", "--group-by", "", "--tag", tag_arg(tags), *keep_flags]
        done = await self._run(args + (["--dry-run"] if dry_run else []), timeout=timeout)
        return parse_forget(done.stdout)

    async def remove(self, snapshot_ids: Sequence[str], *, timeout: float = 600.0) -> None:
        """Forget these snapshots (a partial or failed backup)."""
        if snapshot_ids:
            await self._run(["forget", *snapshot_ids], timeout=timeout)

    async def prune(self, *, timeout: float = 6 * 3600.0) -> None:
        """Delete the data no snapshot refers to any more."""
        await self._run(["prune"], timeout=timeout)

    async def copy(
        self, dest: Repo, snapshot_ids: Sequence[str], *, timeout: float = 6 * 3600.0
    ) -> dict[str, str]:
        """Copy snapshots to `dest` (already there: skipped by restic);
        returns {id here: id there}."""
        if self.location.kind == dest.location.kind == "sftp" and self.location != dest.location:
            raise ValueError("restic 0.14 takes one sftp.command: copy between two SFTP hosts")
        mine = await self.snapshots(timeout=timeout)
        wanted = [s for s in mine if any(s.id.startswith(i) for i in snapshot_ids)]
        missing = [i for i in snapshot_ids if not any(s.id.startswith(i) for s in wanted)]
        if missing:
            raise RepoError(f"{self}: no snapshot {', '.join(missing)} to copy")
        if not wanted:
            return {}
        ids = [s.id for s in wanted]
        if dest.location.kind == "local":
            await dest._ensure_room((await self.stats(ids, timeout=timeout)).total_size)
        args = ["copy", "--from-repo", self.location.repository]
        args += ["--from-password-file", str(self.layout.restic_password), *ids]
        await dest._run(args, timeout=timeout, source=self)
        there = {s.original or s.id: s.id for s in await dest.snapshots(timeout=timeout)}
        return {s.id: there[s.original or s.id] for s in wanted if (s.original or s.id) in there}

    async def stats(
        self, snapshot_ids: Sequence[str] = (), *, mode: str = "raw-data", timeout: float = 600.0
    ) -> Stats:
        """Sizes: "raw-data" is what the repository stores (for the given
        snapshots, or all), "restore-size" what a restore writes."""
        done = await self._run(["stats", "--json", "--mode", mode, *snapshot_ids], timeout=timeout)
        return parse_stats(done.stdout)
