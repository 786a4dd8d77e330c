"""Checking and unpacking an uploaded source archive. Standard library only:
this file also runs as a script, as the build user.

Theory of operation: an upload is hostile, and the builder is root. Three
layers stand between an archive and the builder host:

1. `check_members`, a pure walk over the member list in archive order,
   approves the archive only when extracting it cannot write outside the
   destination whatever the file system does with symlinks. Names must be
   relative without `..`; only directories, regular files, symlinks and hard
   links are accepted; no member may go through (or replace) any member
   that is a symlink or a file (a plain file given twice is the exception:
   the last copy wins), so no symlink is ever followed while
   unpacking, however the symlinks chain (`a/b -> .`, `a/b/c -> ..`, or the
   long nested paths of CVE-2025-4517 that defeat tarfile's own filter on
   Pythons before 3.11.13/3.12.11); a hard link must name a regular file
   extracted before it; a symlink may stay in the tree only when its
   target, resolved against the link's directory and through every other
   symlink of the archive, stays inside. Size and member count are bounded.
2. `extract` writes only what was approved, each member through directory
   descriptors opened with O_NOFOLLOW and files created with O_EXCL, so even
   a wrong approval cannot make it follow a symlink; modes lose the
   setuid, setgid and sticky bits and group/other write (tarfile's "data"
   rules). Where the interpreter has tarfile's "data" filter it is asked
   about each member as well, a second opinion.
3. The builder runs `check_members` first (a bad upload is refused before
   anything is written), then this file as a script under the build user,
   with the destination as working directory and the archive on stdin: the
   script parses and checks the archive again, since its own reading is
   what it writes. The builder then takes the tree back (roost.builder.upload).

The build user's interpreter (roost.builder.interpreter) is not Roost's own
and may be an older 3.11 without tarfile's filters: hence no imports from
Roost here, and no reliance on the filter.
"""

from __future__ import annotations

import os
import stat
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_MEMBERS = 100_000
# Expansion beyond this ratio of the compressed size is refused, once the
# expanded size is past a floor small uploads never reach.
MAX_RATIO = 200
RATIO_FLOOR = 32 << 20
# Longest name or link text accepted: the kernel's PATH_MAX, less its NUL.
MAX_PATH = 4095
# Symlinks followed while resolving one link's target (the kernel's limit),
# and path steps spent resolving all of them (bounds a hostile tangle).
MAX_HOPS = 40
RESOLVE_BUDGET = 4_000_000

DIR, FILE, SYMLINK, HARDLINK = "directory", "file", "symlink", "hard link"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeArchive(ValueError):
    """The archive is refused; the message names the member and the reason."""


@dataclass(frozen=True)
class Entry:
    """One approved member: what to create, where."""

    name: str  # normalized: relative, no "." or ".." parts, no trailing "/"
    kind: str  # DIR, FILE, SYMLINK or HARDLINK
    link: str = ""  # a symlink's text; a hard link's (normalized) file
    mode: int = 0o644  # already stripped of special bits (see _file_mode)
    mtime: int = 0
    size: int = 0
    member: tarfile.TarInfo | None = field(default=None, compare=False, repr=False)


def _q(text: str) -> str:
    """A name for an error message, bounded (names come from the attacker)."""
    return repr(text) if len(text) <= 120 else repr(text[:60]) + "…" + repr(text[-40:])


def _clean(name: str, what: str) -> str:
    """`name` normalized ("" is the top directory), or UnsafeArchive."""
    if not name or "\x00" in name or "\\" in name or len(name) > MAX_PATH:
        raise UnsafeArchive(f"{what} {_q(name)} has an empty, overlong or odd path")
    if name.startswith("/"):
        raise UnsafeArchive(f"{what} {_q(name)} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{what} {_q(name)} contains '..'")
    return "/".join(parts)


def _kind(m: tarfile.TarInfo) -> str:
    if m.isdir():
        return DIR
    if m.issym():
        return SYMLINK
    if m.islnk():
        return HARDLINK
    if m.isreg():
        if m.issparse():
            raise UnsafeArchive(f"member {_q(m.name)} is a sparse file")
        return FILE
    what = "a device" if m.ischr() or m.isblk() else "a fifo" if m.isfifo() else "a special file"
    raise UnsafeArchive(f"member {_q(m.name)} is {what}")


def _file_mode(mode: int) -> int:
    """tarfile's "data" rules: no setuid, setgid, sticky or group/other write;
    the owner can read and write; executable for all only if for the owner."""
    mode = (mode & 0o755) | 0o600
    return mode if mode & 0o100 else mode & ~0o111


def read_members(tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's members, stopping one past MAX_MEMBERS (a bomb of headers)."""
    members = []
    for m in tf:
        members.append(m)
        if len(members) > MAX_MEMBERS:
            break
    return members


def check_members(
    members: Iterable[tarfile.TarInfo], compressed_size: int, max_expanded: int
) -> list[Entry]:
    """The extraction plan for `members`, or UnsafeArchive (pure: no I/O)."""
    # Every path the extraction creates, with its kind; directories that only
    # appear as parents of members are directories too. "" is the destination.
    seen: dict[str, str] = {"": DIR}
    symlinks: dict[str, str] = {}
    plan: list[Entry | None] = []
    where: dict[str, int] = {}  # a file's entry in `plan`, for a later copy replacing it
    linked: set[str] = set()  # files some hard link names
    total = 0
    for count, m in enumerate(members, 1):
        if count > MAX_MEMBERS:
            raise UnsafeArchive(f"more than {MAX_MEMBERS} files")
        name = _clean(m.name, "member")
        kind = _kind(m)
        if name == "":
            if kind != DIR:
                raise UnsafeArchive(f"member {_q(m.name)} names the app directory itself")
            continue
        parts = name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            above = seen.setdefault(prefix, DIR)
            if above != DIR:
                raise UnsafeArchive(f"member {_q(m.name)} goes through {above} {_q(prefix)}")
        earlier = seen.get(name)
        if earlier is not None:
            if earlier == DIR and kind == DIR:
                continue  # a directory named twice changes nothing
            if not (earlier == FILE and kind == FILE and name not in linked):
                raise UnsafeArchive(
                    f"member {_q(m.name)} is in the archive twice (as a {earlier}, "
                    f"then as a {kind}): it would replace or write through the first"
                )
            # A plain file given again (tar -r, or a file named twice): the
            # last copy wins, as with tar, and the first is never written.
            plan[where[name]] = None
        link = ""
        if kind == HARDLINK:
            link = _clean(m.linkname, f"hard link {_q(m.name)} to")
            if seen.get(link) not in (FILE, HARDLINK):
                raise UnsafeArchive(
                    f"hard link {_q(m.name)} -> {_q(m.linkname)} does not name a file "
                    "extracted before it"
                )
            linked.add(link)
        elif kind == SYMLINK:
            link = m.linkname
            _check_symlink_text(name, link)
            symlinks[name] = link
        elif kind == FILE:
            total += max(0, m.size)
            if total > max_expanded:
                raise UnsafeArchive(f"it expands past {max_expanded} bytes")
        seen[name] = kind
        where[name] = len(plan)
        mode = _file_mode(m.mode) if kind in (FILE, HARDLINK) else 0o755
        plan.append(Entry(name, kind, link, mode, int(m.mtime), max(0, m.size), m))
    _Resolver(symlinks).check_all()
    if total > RATIO_FLOOR and total > MAX_RATIO * max(1, compressed_size):
        raise UnsafeArchive(
            f"{compressed_size} bytes expand to {total} bytes "
            f"(more than {MAX_RATIO}x): not a source archive"
        )
    return [e for e in plan if e is not None]


def _check_symlink_text(name: str, text: str) -> None:
    """The lexical part of a symlink's check (the chains are _Resolver's)."""
    if not text or "\x00" in text or len(text) > MAX_PATH:
        raise UnsafeArchive(f"symlink {_q(name)} has an empty, overlong or odd target")
    if text.startswith("/"):
        raise UnsafeArchive(f"symlink {_q(name)} points to absolute path {_q(text)}")
    depth = name.count("/")  # directories above the link inside the tree
    for part in text.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise UnsafeArchive(f"symlink {_q(name)} -> {_q(text)} leaves the app directory")
        elif part not in ("", "."):
            depth += 1


class _Resolver:
    """Resolves symlink targets the way the kernel would in the extracted tree.

    Each link's own directory holds no symlink (check_members refuses any
    member below one), so where a link leads does not depend on who asks:
    results are memoized and the whole check costs about the total length
    of the targets, within RESOLVE_BUDGET steps.
    """

    def __init__(self, symlinks: dict[str, str]) -> None:
        self.links = {tuple(k.split("/")): v for k, v in symlinks.items()}
        self.done: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.budget = RESOLVE_BUDGET

    def check_all(self) -> None:
        for link in self.links:
            self._target(link, 0)

    def _target(self, link: tuple[str, ...], hops: int) -> tuple[str, ...]:
        """Where `link` leads (a path inside the tree), or UnsafeArchive."""
        if link in self.done:
            return self.done[link]
        if hops >= MAX_HOPS:
            raise UnsafeArchive(f"symlink {_q('/'.join(link))} is part of a loop or a long chain")
        text = self.links[link]
        cur = list(link[:-1])
        for part in text.split("/"):
            self.budget -= 1 + len(cur)
            if self.budget < 0:
                raise UnsafeArchive("its symlinks are too tangled to check")
            if part in ("", "."):
                continue
            if part == "..":
                if not cur:
                    raise UnsafeArchive(
                        f"symlink {_q('/'.join(link))} -> {_q(text)} leads out of the app "
                        "directory through other symlinks"
                    )
                cur.pop()
                continue
            cur.append(part)
            if tuple(cur) in self.links:
                cur = list(self._target(tuple(cur), hops + 1))
        self.done[link] = tuple(cur)
        return self.done[link]


# ---------------------------------------------------------------- writing


def _open_dir(top: int, parts: list[str]) -> int:
    """A descriptor of top/parts..., making missing directories; never follows a symlink."""
    fd = os.dup(top)
    try:
        for part in parts:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _second_opinion(e: Entry, dest: str) -> None:
    """tarfile's "data" filter on the member, where this Python has it."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None or e.member is None:
        return
    try:
        data_filter(e.member, dest)
    except tarfile.FilterError as exc:
        raise UnsafeArchive(f"member {_q(e.name)}: {exc}") from None


def extract(tf: tarfile.TarFile, plan: list[Entry], top: int, dest: str) -> None:
    """Create `plan`'s entries under the directory open as `top` (`dest` is its path)."""
    parent_name: str | None = None
    parent = -1
    dirs: list[Entry] = []
    try:
        for e in plan:
            _second_opinion(e, dest)
            where, _, base = e.name.rpartition("/")
            if where != parent_name:
                if parent >= 0:
                    os.close(parent)
                    parent = -1
                parent = _open_dir(top, where.split("/") if where else [])
                parent_name = where
            if e.kind == DIR:
                try:
                    os.mkdir(base, 0o755, dir_fd=parent)
                except FileExistsError:  # made earlier as a parent: must be a directory
                    st = os.stat(base, dir_fd=parent, follow_symlinks=False)
                    if not stat.S_ISDIR(st.st_mode):
                        raise UnsafeArchive(f"member {_q(e.name)} is not a directory") from None
                dirs.append(e)
            elif e.kind == FILE:
                _write_file(tf, e, os.open(base, _NEW_FILE_FLAGS, 0o600, dir_fd=parent))
            elif e.kind == SYMLINK:
                os.symlink(e.link, base, dir_fd=parent)
            else:
                where_to, _, to_base = e.link.rpartition("/")
                src = _open_dir(top, where_to.split("/") if where_to else [])
                try:
                    os.link(to_base, base, src_dir_fd=src, dst_dir_fd=parent,
                            follow_symlinks=False)  # fmt: skip
                finally:
                    os.close(src)
        # Directory times last, deepest first: creating entries changed them.
        for e in reversed(dirs):
            fd = _open_dir(top, e.name.split("/"))
            try:
                os.utime(fd, (e.mtime, e.mtime))
            finally:
                os.close(fd)
    finally:
        if parent >= 0:
            os.close(parent)


def _write_file(tf: tarfile.TarFile, e: Entry, fd: int) -> None:
    with os.fdopen(fd, "wb") as out:
        assert e.member is not None
        src = tf.extractfile(e.member)
        if src is None:
            raise UnsafeArchive(f"member {_q(e.name)} has no data")
        left = e.size
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                raise UnsafeArchive(f"member {_q(e.name)} is truncated")
            out.write(chunk)
            left -= len(chunk)
        out.flush()
        os.fchmod(out.fileno(), e.mode)
        os.utime(out.fileno(), (e.mtime, e.mtime))


def main(argv: list[str]) -> int:
    """`extract.py MAX_EXPANDED`: the archive on stdin, into the working directory.

    Prints the number of members; exits 2 with "upload refused: why" on stderr.
    """
    if len(argv) != 2:
        print("usage: extract.py MAX_EXPANDED_BYTES < archive", file=sys.stderr)
        return 64
    os.umask(0o022)
    dest = os.getcwd()
    try:
        archive = os.fdopen(0, "rb", closefd=False)
        size = os.fstat(0).st_size
        with tarfile.open(fileobj=archive, mode="r:*") as tf:
            plan = check_members(read_members(tf), size, int(argv[1]))
            top = os.open(".", _DIR_FLAGS)
            try:
                extract(tf, plan, top, dest)
            finally:
                os.close(top)
    except UnsafeArchive as exc:
        print(f"upload refused: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # any failure to read or write it is the archive's
        print(f"upload refused: cannot unpack it ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    print(len(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
