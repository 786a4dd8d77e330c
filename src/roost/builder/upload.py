"""Unpacking an uploaded source archive, which is untrusted.

Every member is checked before anything is written: names must be relative
and stay inside the checkout, links must point inside it, only regular files,
directories and such links are accepted (no devices, fifos, hard links out),
and both the archive and its expansion are bounded. A bad archive is refused
whole with the first reason found, and nothing is written outside `dest`
(extraction also runs through tarfile's "data" filter as a second guard).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path

from roost.builder.errors import BuildError

MAX_MEMBERS = 100_000
# Expansion beyond this ratio of the compressed size is refused, once the
# expanded size is past a floor small uploads never reach.
MAX_RATIO = 200
RATIO_FLOOR = 32 << 20


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int

    @property
    def max_expanded_bytes(self) -> int:
        return 4 * self.max_upload_bytes


def _clean_name(name: str) -> str:
    """The member name as a normalized relative path, or BuildError."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise BuildError(f"upload refused: member {name!r} has an absolute or odd path")
    norm = posixpath.normpath(name)
    if norm == "." or norm.startswith("../") or norm == "..":
        if norm == ".":
            return "."
        raise BuildError(f"upload refused: member {name!r} points outside the app directory")
    if any(part == ".." for part in name.split("/")):
        raise BuildError(f"upload refused: member {name!r} contains '..'")
    return norm


def _check_link(member: tarfile.TarInfo, name: str) -> None:
    target = member.linkname
    if member.issym():
        if target.startswith("/"):
            raise BuildError(f"upload refused: symlink {name!r} points to absolute path {target!r}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    else:  # hard link: the target is another member's name
        resolved = posixpath.normpath(target)
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise BuildError(f"upload refused: link {name!r} -> {target!r} leaves the app directory")


def check_members(
    members: list[tarfile.TarInfo], compressed_size: int, limits: UploadLimits
) -> None:
    """Refuse the archive unless every member is safe (pure: no I/O)."""
    if len(members) > MAX_MEMBERS:
        raise BuildError(f"upload refused: more than {MAX_MEMBERS} files")
    total = 0
    for m in members:
        name = _clean_name(m.name)
        if m.isdev() or m.isfifo() or not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise BuildError(f"upload refused: {m.name!r} is a device, fifo or special file")
        if m.issparse():
            raise BuildError(f"upload refused: {m.name!r} is a sparse file")
        if m.issym() or m.islnk():
            _check_link(m, name)
        total += max(0, m.size)
        if total > limits.max_expanded_bytes:
            raise BuildError(f"upload refused: it expands past {limits.max_expanded_bytes} bytes")
    if total > RATIO_FLOOR and total > MAX_RATIO * max(1, compressed_size):
        raise BuildError(
            f"upload refused: {compressed_size} bytes expand to {total} bytes "
            f"(more than {MAX_RATIO}x): not a source archive"
        )


def extract_upload(archive: bytes, dest: Path, limits: UploadLimits) -> int:
    """Unpack a tar (optionally gzip/bz2/xz) into the empty directory `dest`.

    Returns the number of members. Blocking: call it in a thread.
    """
    if len(archive) > limits.max_upload_bytes:
        raise BuildError(
            f"upload refused: {len(archive)} bytes is more than the limit of "
            f"{limits.max_upload_bytes} bytes (ROOST_MAX_UPLOAD)"
        )
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tf:
            members = []
            # Iterate lazily so a bomb of headers is stopped at MAX_MEMBERS.
            for m in tf:
                members.append(m)
                if len(members) > MAX_MEMBERS:
                    break
            check_members(members, len(archive), limits)
            tf.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        raise BuildError(f"upload refused: not a readable tar archive ({exc})") from None
    except (EOFError, OSError) as exc:  # truncated or corrupt compression
        raise BuildError(f"upload refused: damaged archive ({exc})") from None
    return len(members)
