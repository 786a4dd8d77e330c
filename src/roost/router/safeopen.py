"""Opening a file beneath a directory without ever following a symlink.

A static bundle's bytes came out of a build, and a build runs untrusted code:
a symlink in a bundle (`root -> /`, `passwd.css -> /etc/passwd`) must never
lead the router to a file outside it, even one an older builder let through.
Checking a path first and opening it after is a race and misses links in
the middle of it; the kernel has to refuse them during the open itself.

`open_beneath(dirfd, parts, flags)` does that: openat2(2) with
RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS (Linux 5.6+)
through ctypes, since Python has no binding. Where the kernel (or a seccomp
profile) lacks openat2, it walks the path one component at a time from
directory descriptors, each opened with O_NOFOLLOW, which refuses a symlink
at any step just the same. Either way a symlink fails with ELOOP (or
ENOTDIR for one in the middle, in the fallback), an escape with EXDEV.

`path_parts` is the pure half: a relative path -> its components, or None
when one of them could climb out (`..`) or is not a name.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable, Sequence

# linux/openat2.h
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

# openat2 has one number on the architectures that share the generic table
# (it arrived after the tables were unified); elsewhere, the fallback.
_SYSCALL = {"x86_64": 437, "aarch64": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437}

# Every open: no symlink as the last component (the fallback relies on it),
# no descriptor leaked into children, and no blocking on a FIFO (the router
# opens on its event loop; what it opened is checked with fstat after).
BASE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def path_parts(path: str) -> list[str] | None:
    """'a/b//c/' -> ['a', 'b', 'c']; None when a component is '..' or holds NUL.

    '.' and empty components are dropped; a leading '/' is just an empty
    component (the result is always relative to the directory opened)."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == ".." or "\0" in part:
            return None
        out.append(part)
    return out


class _Openat2:
    """The openat2 syscall through libc's syscall(), probed once."""

    def __init__(self) -> None:
        self.number = _SYSCALL.get(platform.machine())
        self._call: Callable[..., int] | None = None
        self._usable: bool | None = None

    def usable(self) -> bool:
        if self._usable is None:
            self._usable = self._probe()
        return self._usable

    def _probe(self) -> bool:
        if self.number is None:
            return False
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            call = libc.syscall
        except (OSError, AttributeError):
            return False
        call.restype = ctypes.c_long
        call.argtypes = [
            ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t
        ]  # fmt: skip
        self._call = call
        try:
            fd = self.open(-100, b".", os.O_PATH)  # AT_FDCWD
        except OSError as exc:
            # ENOSYS: an older kernel; EPERM: a seccomp profile that predates
            # openat2. Any other error means it exists (it ran and refused).
            return exc.errno not in (errno.ENOSYS, errno.EPERM)
        os.close(fd)
        return True

    def open(self, dirfd: int, path: bytes, flags: int) -> int:
        assert self._call is not None and self.number is not None
        how = _OpenHow(flags, 0, RESOLVE)
        fd = self._call(self.number, dirfd, path, ctypes.byref(how), ctypes.sizeof(how))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path.decode(errors="replace"))
        return int(fd)


_openat2 = _Openat2()


def openat2_available() -> bool:
    return _openat2.usable()


def open_beneath(
    dirfd: int, parts: Sequence[str], flags: int = os.O_RDONLY, *, use_openat2: bool | None = None
) -> int:
    """A new descriptor for `parts` beneath the directory `dirfd`; OSError when
    missing, when any component is a symlink, or when it would leave `dirfd`.

    `parts` come from `path_parts` (checked again here: a '..' or '/' is
    refused with EXDEV). No parts opens `dirfd`'s directory itself anew.
    `use_openat2` is for tests: False forces the component walk."""
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\0" in part:
            raise OSError(errno.EXDEV, "path component leaves the directory", part)
    flags |= BASE_FLAGS
    if use_openat2 is None:
        use_openat2 = _openat2.usable()
    if use_openat2:
        if not _openat2.usable():
            raise OSError(errno.ENOSYS, "openat2 is not available here")
        return _openat2.open(dirfd, os.fsencode("/".join(parts) or "."), flags)
    return _open_walk(dirfd, parts, flags)


def _open_walk(dirfd: int, parts: Sequence[str], flags: int) -> int:
    if not parts:
        return os.open(".", flags, dir_fd=dirfd)
    # O_PATH|O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR: each
    # intermediate step is a real directory entry of the previous one.
    step = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    cur = dirfd
    try:
        for part in parts[:-1]:
            nxt = os.open(part, step, dir_fd=cur)
            if cur != dirfd:
                os.close(cur)
            cur = nxt
        return os.open(parts[-1], flags, dir_fd=cur)
    finally:
        if cur != dirfd:
            os.close(cur)
