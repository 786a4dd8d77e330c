"""Unpacking an uploaded source archive, which is untrusted, without root.

Theory of operation (roost.builder.extract holds the checks and the writer):
the builder first parses the archive and runs the pure `check_members` over
it, so a bad upload is refused with the first reason found before anything
is written. Then roost.builder.extract runs as a script under the build user
(its interpreter, not Roost's), with a fresh directory the builder made and
gave to that user as working directory and the archive on stdin: it checks
the archive again and writes only what it approved, never following a
symlink. Whatever the archive does, it does as an unprivileged user.

The tree is then taken back before the builder (root) reads or edits it:
every directory is made the builder's (and not writable by others) before
its entries are listed, so nothing can be added behind the walk, and the
tree must hold exactly the approved entries (kinds, symlink texts, link
counts), none of them special, all stripped of setuid, setgid and sticky
bits. Another build's code, which runs as the same build user, could only
have raced with the extraction; anything it left is found here and refuses
the upload. On any failure nothing of the extraction is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import select
import shutil
import stat
import subprocess
import tarfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.builder import extract as extractor
from roost.builder.errors import BuildError
from roost.builder.extract import DIR, FILE, HARDLINK, SYMLINK, Entry, UnsafeArchive
from roost.builder.pack import end_process, run_abortable
from roost.builder.sandbox import BuildUser

# The extractor's output is a count or one reason; more than this is cut.
OUTPUT_LIMIT = 64 << 10


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int

    @property
    def max_expanded_bytes(self) -> int:
        return 4 * self.max_upload_bytes


def check_upload(archive: bytes, limits: UploadLimits) -> list[Entry]:
    """The extraction plan of an upload, or BuildError saying why it is refused.

    Pure (reads only `archive`); blocking: call it in a thread.
    """
    if len(archive) > limits.max_upload_bytes:
        raise BuildError(
            f"upload refused: {len(archive)} bytes is more than the limit of "
            f"{limits.max_upload_bytes} bytes (ROOST_MAX_UPLOAD)"
        )
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tf:
            members = extractor.read_members(tf)
        return extractor.check_members(members, len(archive), limits.max_expanded_bytes)
    except UnsafeArchive as exc:
        raise BuildError(f"upload refused: {exc}") from None
    except tarfile.TarError as exc:
        raise BuildError(f"upload refused: not a readable tar archive ({exc})") from None
    except (EOFError, OSError) as exc:  # truncated or corrupt compression
        raise BuildError(f"upload refused: damaged archive ({exc})") from None


async def extract_upload(
    archive: bytes,
    dest: Path,
    limits: UploadLimits,
    *,
    user: BuildUser,
    python: str,
    work: Path,
) -> int:
    """Unpack a tar (optionally gzip/bz2/xz) into `dest` (absent, or an empty directory).

    `work` is a directory of the builder's (root's) for the extraction's own
    files; `python` is an interpreter `user` can run. Returns the number of
    members unpacked; `dest` ends up the builder's.
    """
    plan = await asyncio.to_thread(check_upload, archive, limits)
    tree = work / ".upload"
    saved = work / ".upload.tar"
    script = work / "extract.py"
    try:
        tree.mkdir(mode=0o755)
        user.chown(tree)
        fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(archive)
        shutil.copyfile(extractor.__file__, script)
        os.chmod(script, 0o644)
        argv = [python, "-I", "-S", str(script), str(limits.max_expanded_bytes)]
        rc, out = await run_abortable(lambda abort: _run(argv, saved, tree, user, abort))
        if rc != 0:
            lines = [ln for ln in out.splitlines() if ln.strip()]
            why = lines[-1][:2000] if lines else f"exit {rc}"
            if not why.startswith("upload refused: "):
                why = f"unpacking the upload failed: {why}"
            raise BuildError(why)
        await asyncio.to_thread(reclaim_tree, tree, plan, user)
        os.replace(tree, dest)
    finally:
        await asyncio.shield(asyncio.to_thread(_remove, tree, saved, script))
    return len(plan)


def _run(
    argv: list[str], archive: Path, cwd: Path, user: BuildUser, abort: threading.Event
) -> tuple[int, str]:
    """Run the extractor as `user` (set by _posixsubprocess: thread-safe), archive on stdin."""
    who: dict[str, Any] = (
        {"user": user.uid, "group": user.gid, "extra_groups": []} if user.dropped else {}
    )
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    try:
        with open(archive, "rb") as stdin:
            proc = subprocess.Popen(
                argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=cwd, env=env, start_new_session=True, **who,
            )  # fmt: skip
    except OSError as exc:
        raise BuildError(f"cannot run the upload extractor ({argv[0]}): {exc}") from None
    try:
        assert proc.stdout is not None
        chunks: list[bytes] = []
        got = 0
        # The extractor prints one line: reading until EOF, a byte budget on top.
        while chunk := _read_abortable(proc.stdout.fileno(), abort):
            if got < OUTPUT_LIMIT:
                chunks.append(chunk[: OUTPUT_LIMIT - got])
            got += len(chunk)
        rc = proc.wait()
        return rc, b"".join(chunks).decode("utf-8", "replace")
    finally:
        end_process(proc)


def _read_abortable(fd: int, abort: threading.Event) -> bytes:
    while True:
        if abort.is_set():
            raise BuildError("build cancelled")
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            return os.read(fd, 1 << 16)


def reclaim_tree(root: Path, plan: list[Entry], user: BuildUser) -> None:
    """Make the extracted tree the builder's and check it is exactly `plan`.

    Blocking. Raises BuildError when anything differs (the tree is then left
    for the caller to remove).
    """
    expected: dict[str, tuple[str, str]] = {}
    # A hard link and the file it names are one inode: its link count is
    # the size of the group, keyed by the file's name.
    group: dict[str, str] = {}
    links: Counter[str] = Counter()
    for e in plan:
        parts = e.name.split("/")
        for i in range(1, len(parts)):
            expected["/".join(parts[:i])] = (DIR, "")
        kind = FILE if e.kind == HARDLINK else e.kind
        expected[e.name] = (kind, e.link if e.kind == SYMLINK else "")
        if kind == FILE:
            group[e.name] = group.get(e.link, e.link) if e.kind == HARDLINK else e.name
            links[group[e.name]] += 1
    owner = (os.geteuid(), os.getegid())
    extractor_uid = user.uid if user.dropped else os.geteuid()
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _reclaim_dir(top, "", expected, (group, links, set()), owner, extractor_uid, user.dropped)
    finally:
        os.close(top)
    if expected:
        missing = sorted(expected)[0]
        raise BuildError(f"upload refused: {missing!r} is missing after unpacking")


def _reclaim_dir(
    fd: int,
    rel: str,
    expected: dict[str, tuple[str, str]],
    inodes: tuple[dict[str, str], Counter[str], set[tuple[int, int]]],
    owner: tuple[int, int],
    extractor_uid: int,
    chown: bool,
) -> None:
    st = os.fstat(fd)
    if st.st_uid != extractor_uid:
        raise BuildError(f"upload refused: {rel or '.'!r} changed owner while unpacking")
    # Ours and closed to others first, listed after: nothing appears behind us.
    if chown:
        os.fchown(fd, *owner)
    os.fchmod(fd, 0o755)
    for name in sorted(os.listdir(fd)):
        path = f"{rel}/{name}" if rel else name
        want = expected.pop(path, None)
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        kind = (
            DIR if stat.S_ISDIR(st.st_mode)
            else FILE if stat.S_ISREG(st.st_mode)
            else SYMLINK if stat.S_ISLNK(st.st_mode)
            else "special file"
        )  # fmt: skip
        if want is None or want[0] != kind:
            raise BuildError(f"upload refused: unexpected {kind} {path!r} after unpacking")
        if kind == DIR:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)  # fmt: skip
            try:
                _reclaim_dir(sub, path, expected, inodes, owner, extractor_uid, chown)
            finally:
                os.close(sub)
        elif kind == SYMLINK:
            if os.readlink(name, dir_fd=fd) != want[1]:
                raise BuildError(f"upload refused: symlink {path!r} changed while unpacking")
            if chown:
                os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
        else:
            ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                          dir_fd=fd)  # fmt: skip
            try:
                fst = os.fstat(ffd)
                group, links, done = inodes
                # A file linked from outside the tree (a planted hard link)
                # has more links than the archive made: never touch it.
                # The other names of a hard-linked file find it done already.
                if fst.st_nlink != links[group[path]] or (
                    fst.st_uid != extractor_uid and (fst.st_dev, fst.st_ino) not in done
                ):
                    raise BuildError(f"upload refused: {path!r} changed while unpacking")
                done.add((fst.st_dev, fst.st_ino))
                if chown:
                    os.fchown(ffd, *owner)
                os.fchmod(ffd, fst.st_mode & 0o755)
            finally:
                os.close(ffd)


def _remove(*paths: Path) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
