"""The checkout's files as the build leaves them: [symlinks] made relative to
where they sit, and modes that let every later reader (uv, the build user,
the app's own user) read the tree."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from roost.appspec.runtime import relative_symlink
from roost.builder.errors import BuildError


def link_text(link: str, target: str) -> str:
    """What os.symlink gets for a [symlinks] entry: relative to the link's own
    directory, so the image can be unpacked anywhere. A data-directory target
    goes through the image root's `data` link, which the runner points at the
    app's data directory on each host (ep.io's `../data`)."""
    data_prefix = "%(data_directory)s"
    if target.startswith(data_prefix):
        target = "../data/" + target[len(data_prefix) :].lstrip("/")
    rel = relative_symlink(link, target)
    return rel if rel is not None else target


def open_dirs(root: Path) -> None:
    """Directories of the checkout become 0755 and files readable by all (and
    executable by all when by anyone): tar makes the directories an upload
    only implies (no entry of their own) under the builder's umask, 077, an
    upload may carry 0600 files, and the image's readers (uv and the build
    user, then each app's own user) must read them all. The image is the
    app's; nothing in it is secret from the app, and other apps never see it.
    Symbolic links are left alone (a chmod would follow them)."""
    found = [str(root)]
    for dirpath, dirnames, filenames in os.walk(root):
        found += (os.path.join(dirpath, n) for n in dirnames + filenames)
    for path in found:
        st = os.lstat(path)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            want = mode | 0o755
        elif stat.S_ISREG(st.st_mode):
            want = mode | 0o444 | (0o111 if mode & 0o111 else 0)
        else:
            continue
        if want != mode:
            os.chmod(path, want)


def apply_symlinks(src: Path, symlinks: Mapping[str, str], log: Callable[[str], None]) -> None:
    """Make the app's [symlinks] in the unpacked upload `src` (still the
    builder's: no app code has run), replacing files or empty directories."""
    for link, target in symlinks.items():
        rel = Path(link.rstrip("/"))
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise BuildError(f"[symlinks] {link!r} must be a path inside the app")
        path = src / rel
        if not path.parent.resolve().is_relative_to(src.resolve()):
            raise BuildError(f"[symlinks] {link!r} leads outside the app")
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            if any(path.iterdir()):
                raise BuildError(f"[symlinks] {link!r}: a non-empty directory is in the way")
            path.rmdir()
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link_text(rel.as_posix(), target), path)
        log(f"       symlink {link} -> {target}")
