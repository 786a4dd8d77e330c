"""Unpacking a data directory's archive for a restore, refusing any escape.

The archive comes from backupd, but what is in it came from the app: its
names are hostile until checked. The whole member list is judged first
(`check_members`, pure) and the archive refused, nothing written, when one
member is wrong: an absolute name, a `..` part, a hard link, a device or
fifo, a symlink whose target leaves the tree (absolute, or climbing above
the root from where it sits), a name twice, or a member under a symlink
(written through it, it would land where the link points). Then it is
unpacked into a new directory with tarfile's `data` filter as a second
line, symlinks made as links and never followed.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path


class BadArchive(ValueError):
    pass


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def check_members(members: Sequence[tarfile.TarInfo]) -> int:
    """Refuse (BadArchive) an archive that could write outside its root;
    the bytes its files hold."""
    seen: set[str] = set()
    parents: set[str] = set()  # directories a member is under
    links: set[str] = set()
    total = 0
    for m in members:
        name = m.name
        if "\x00" in name or name.startswith("/") or "\\" in name:
            raise BadArchive(f"{name!r}: only relative names may be in the archive")
        parts = _parts(name)
        if ".." in parts:
            raise BadArchive(f"{name!r} leaves the data directory")
        if not parts:
            if m.isdir():
                continue  # the root itself ("." or "./")
            raise BadArchive(f"{name!r} is not a file name")
        rel = "/".join(parts)
        if rel in seen:
            raise BadArchive(f"{rel!r} is in the archive twice")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in links:
                raise BadArchive(f"{rel!r} would be written through the symlink {parent!r}")
            parents.add(parent)
        if m.issym():
            if rel in parents:
                raise BadArchive(f"symlink {rel!r} replaces a directory that holds files")
            target = m.linkname
            if not target or target.startswith("/") or "\x00" in target:
                raise BadArchive(f"symlink {rel!r} points outside the data directory ({target!r})")
            where = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            if where == ".." or where.startswith("../"):
                raise BadArchive(f"symlink {rel!r} points outside the data directory ({target!r})")
            links.add(rel)
        elif m.isreg():
            total += m.size
        elif not m.isdir():
            raise BadArchive(f"{rel!r} is not a file, directory or symlink")
        seen.add(rel)
    return total


def open_archive(archive: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(archive), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadArchive(f"not a tar archive: {exc}") from None


def unpack(archive: bytes, dest: Path) -> int:
    """Check, then unpack `archive` into the new directory `dest`; the
    files' bytes. Blocking: run in a thread."""
    with open_archive(archive) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadArchive(f"the archive is damaged: {exc}") from None
        total = check_members(members)
        dest.mkdir(mode=0o700)
        try:
            tar.extractall(dest, members=members, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise BadArchive(f"could not unpack the archive: {exc}") from None
        _dir_modes(members, dest)
    dest.chmod(0o700)  # (an archived "." may carry a mode of its own)
    return total


def _dir_modes(members: Sequence[tarfile.TarInfo], dest: Path) -> None:
    """The directories' own modes, which the `data` filter leaves to the
    umask (the daemon's is private): as archived, less group and other
    write (as the filter does for files), the owner's rwx kept."""
    for m in members:
        path = dest / m.name
        if m.isdir() and _parts(m.name) and stat.S_ISDIR(os.lstat(path).st_mode):
            os.chmod(path, (m.mode & 0o755) | 0o700)


def uncompressed_size(archive: bytes) -> int:
    """The bytes the archive's files would take (checked members only)."""
    with open_archive(archive) as tar:
        try:
            return check_members(tar.getmembers())
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadArchive(f"the archive is damaged: {exc}") from None
