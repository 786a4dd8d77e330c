"""Unpacking images and their layers (tar archives made by the builder).

Images are verified against their digest before they are unpacked, so they
are known to be what a builder produced. Runners unpack as root, though, and
a layer packs a tree the build user (so the upload's code) could shape, so
unpacking trusts nothing a tar header says about privilege:

- the member list is checked first (`check_layer`, pure): no absolute names,
  no `..`, no device nodes, fifos or other special files, no member through
  a symlink member, hard links only to a regular file before them. Symlinks
  may point anywhere (a venv's python points at the interpreter): nothing is
  ever written through one.
- files belong to whoever unpacks (`--no-same-owner`), never to the owner
  the archive records, and lose their setuid, setgid and sticky bits and
  group/other write (`--no-same-permissions` under umask 022; the daemons'
  own umask is private, which would hide the image from its app's user).
  Extended attributes, file capabilities among them, are never restored.

GNU tar does the work when present (an image is tens of megabytes in
thousands of files; Python's tarfile is about four times slower at it);
tarfile with the same rules otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from roost.images.digest import ImageError
from roost.images.filemanifest import DIR, FileManifest
from roost.images.layerarchive import FILES_MEMBER, check_members
from roost.images.linkplan import Identity, Source, exclude_list, plan_links
from roost.images.linkunpack import Checked, check_tree, link_planned, make_dirs
from roost.proc import spawn
from roost.proc.stop import signal_group

IMAGE_MANIFEST = "roost-image.json"
STATIC_MANIFEST = "roost-static.json"

# tar runs under this umask: with --no-same-permissions it is what strips
# group/other write (setuid, setgid and sticky go whatever the umask).
UNPACK_UMASK = "022"


def _clean(name: str, what: str) -> str:
    if not name or "\x00" in name or name.startswith("/"):
        raise ImageError(f"image layer refused: {what} {name[:200]!r} is empty or absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"image layer refused: {what} {name[:200]!r} contains '..'")
    return "/".join(parts)


def check_layer(members: Iterable[tarfile.TarInfo]) -> None:
    """Refuse a layer holding anything an image never does (pure: no I/O)."""
    seen: dict[str, str] = {"": "directory"}
    for m in members:
        name = _clean(m.name, "member")
        if m.isdir():
            kind = "directory"
        elif m.issym():
            kind = "symlink"
        elif m.islnk():
            kind = "hard link"
        elif m.isreg():
            kind = "file"
        else:
            what = (
                "device node"
                if m.ischr() or m.isblk()
                else "fifo"
                if m.isfifo()
                else "special file"
            )
            raise ImageError(f"image layer refused: {name[:200]!r} is a {what}")
        parts = name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            above = seen.setdefault(prefix, "directory")
            if above != "directory":
                raise ImageError(
                    f"image layer refused: {name[:200]!r} goes through {above} {prefix[:200]!r}"
                )
        earlier = seen.get(name)
        if earlier is not None and not (earlier == kind == "directory"):
            raise ImageError(f"image layer refused: {name[:200]!r} is in it twice")
        if kind == "hard link":
            target = _clean(m.linkname, f"hard link {name[:200]!r} to")
            if seen.get(target) not in ("file", "hard link"):
                raise ImageError(
                    f"image layer refused: hard link {name[:200]!r} does not name a file before it"
                )
        seen[name] = kind


def _check_archive(archive: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            check_layer(tf)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ImageError(f"cannot read {archive.name}: {exc}") from exc


def _tar_argv(archive: Path, dest: Path) -> list[str] | None:
    tar = shutil.which("tar")
    if tar is None:
        return None
    # --no-same-owner: files belong to whoever unpacks. --no-same-permissions:
    # no setuid/setgid/sticky bits, and the umask applies (a shell sets it:
    # uvloop's subprocess_exec takes no umask=). GNU tar also refuses members
    # with ".." and strips leading "/" from names.
    return [
        "/bin/sh", "-c", f'umask {UNPACK_UMASK} && exec "$0" "$@"',
        tar, "-x", "-f", str(archive), "-C", str(dest),
        "--no-same-owner", "--no-same-permissions",
    ]  # fmt: skip


# None: not set on extraction (typeshed types these fields as never None).
_NO_OWNER: dict[str, Any] = {"uid": None, "gid": None, "uname": None, "gname": None}


def _layer_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """tarfile's "tar" filter (no setuid/setgid/sticky, no group/other write),
    and no owner from the archive: files belong to whoever unpacks."""
    member = tarfile.tar_filter(member, path)
    return member.replace(**_NO_OWNER, deep=False)


def _unpack_with_tarfile(archive: Path, dest: Path) -> None:
    _check_archive(archive)
    try:
        with tarfile.open(archive, "r:*") as tf:
            tf.extractall(dest, filter=_layer_filter)
    except (tarfile.TarError, OSError) as exc:
        raise ImageError(f"cannot unpack {archive.name}: {exc}") from exc


def unpack(
    archive: Path, dest: Path, exclude_from: Path | None = None, *, checked: bool = False
) -> None:
    """Unpack `archive` into the existing directory `dest` (blocking), but for the
    members named in the file `exclude_from` (one a line; GNU tar only).
    `checked`: the caller checked every member already (a layer named by its
    files: `layerarchive.check_members`), so tarfile's pass is not made."""
    argv = _tar_argv(archive, dest)
    if argv is None:
        if exclude_from is not None:
            raise ImageError("leaving members out of an unpack needs GNU tar")
        _unpack_with_tarfile(archive, dest)
        return
    if exclude_from is not None:
        # Exact names: no wildcards, from the archive's top (a name's match
        # also leaves out what is below it, which a file has nothing of).
        argv += ["--anchored", "--no-wildcards", f"--exclude-from={exclude_from}"]
    if not checked:
        _check_archive(archive)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"cannot unpack {archive.name}: {proc.stderr.strip()[-2000:]}")


async def unpack_async(archive: Path, dest: Path) -> None:
    argv = _tar_argv(archive, dest)
    if argv is None:
        await asyncio.to_thread(_unpack_with_tarfile, archive, dest)
        return
    await asyncio.to_thread(_check_archive, archive)
    proc = await spawn.start(
        argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: tar must not write on behind our back
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    if proc.returncode != 0:
        raise ImageError(f"cannot unpack {archive.name}: {err.decode(errors='replace')[-2000:]}")


def can_leave_out() -> bool:
    """Whether `unpack` can leave members out (GNU tar is here): tarfile's extraction
    would write into a file already at a member's path, a linked one included."""
    return shutil.which("tar") is not None


def unpack_layer_archive(
    archive: Path,
    dest: Path,
    digest: str,
    *,
    layers: Path | None = None,
    sources: Callable[[FileManifest], Mapping[bytes, Sequence[Source]]] | None = None,
) -> Checked:
    """Unpack a layer named by its files (`roost.images.layerarchive`) into the new
    directory `dest`, then check it (blocking).

    The archive's own bytes name nothing: what is trusted is the unpacked
    tree, once it is exactly the manifest the archive begins with (whose
    sha256 is `digest`), every file hashed or linked from a verified one.
    With `sources` (the manifest -> sha256 -> cached files under `layers`,
    `roost.images.layerindex`), the files a cached layer holds are
    hard-linked from it and tar writes only the others
    (`roost.images.linkunpack`). The manifest's own member is not
    kept. Anything else removes `dest` and raises ImageError.
    """
    # Every member's header against the manifest (no file read: the tree is
    # hashed once unpacked), in place of tarfile's generic pass.
    manifest = check_members(archive, digest)
    plan = {}
    if layers is not None and sources is not None and can_leave_out():
        plan = plan_links(manifest.entries, sources(manifest))
    dest.mkdir()
    exclude: Path | None = None
    try:
        linked: dict[str, Identity] = {}
        if plan:
            assert layers is not None
            make_dirs(dest, (e.path for e in manifest.entries if e.kind == DIR))
            linked = link_planned(dest, layers, plan)
        if linked:
            fd, name = tempfile.mkstemp(prefix="roost-linked-")
            exclude = Path(name)
            with os.fdopen(fd, "wb") as fh:
                fh.write(exclude_list(linked))
        unpack(archive, dest, exclude, checked=True)
        head = dest / FILES_MEMBER
        try:
            regular = stat.S_ISREG(os.lstat(head).st_mode)
        except FileNotFoundError:
            regular = False
        if not regular:
            raise ImageError(f"layer {digest}: {FILES_MEMBER} is not its manifest")
        head.unlink()
        return check_tree(dest, manifest, linked)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        if exclude is not None:
            exclude.unlink(missing_ok=True)


def tree_size(root: Path) -> int:
    """Bytes used by the files under `root` (symlinks counted as themselves)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total
