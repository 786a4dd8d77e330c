"""A small SFTP (version 3) server on stdin/stdout, confined to apps' data directories.

`python -m roost.servicehost.sftpd ROOT UID GID APP...` serves a virtual tree
whose root lists the APPs; `/APP/path` is ROOT/APP/path. OpenSSH's scp
speaks SFTP by default (since 9.0), so this is what makes a plain
`scp file HOST:APP/path` work; the gateway relays the bytes of the client's
"sftp" subsystem to it as an exec session.

Confinement: paths are normalised lexically first (so `..` never walks out
of the virtual root), the first component must be one of the APPs, and every
existing path is resolved with symlinks followed and must stay inside that
app's directory (rsync stores uploaded symlinks munged, so they point
nowhere, and this server creates none). When started as root it drops to
UID/GID, after its imports and before reading the first request.

Only what clients use is implemented: open/read/write/close, stat family,
setstat (mode and times), directories, remove, rename, realpath; symlinks
are refused and extensions answered "unsupported".
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import struct
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO

INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK, EXTENDED = 19, 20, 200
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE, OP_UNSUPPORTED = 0, 1, 2, 3, 4, 5, 8
F_READ, F_WRITE, F_APPEND, F_CREAT, F_TRUNC, F_EXCL = 1, 2, 4, 8, 16, 32
A_SIZE, A_UIDGID, A_PERMS, A_TIMES = 1, 2, 4, 8
MAX_READ = 256 * 1024
MAX_PACKET = 1 << 20


class SftpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _os_error(exc: OSError) -> SftpError:
    code = {
        errno.ENOENT: NO_SUCH_FILE,
        errno.ENOTDIR: NO_SUCH_FILE,
        errno.EACCES: PERMISSION_DENIED,
        errno.EPERM: PERMISSION_DENIED,
    }.get(exc.errno or 0, FAILURE)
    return SftpError(code, exc.strerror or str(exc))


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise SftpError(BAD_MESSAGE, "truncated request")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.u32())

    def attrs(self) -> dict[str, int]:
        flags = self.u32()
        out: dict[str, int] = {}
        if flags & A_SIZE:
            out["size"] = self.u64()
        if flags & A_UIDGID:
            self.u32(), self.u32()  # ownership changes are not ours to make
        if flags & A_PERMS:
            out["mode"] = self.u32()
        if flags & A_TIMES:
            out["atime"], out["mtime"] = self.u32(), self.u32()
        if flags & 0x80000000:
            for _ in range(self.u32()):
                self.string(), self.string()
        return out


def _s(b: bytes | str) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">I", len(b)) + b


def _attrs(st: os.stat_result | None) -> bytes:
    if st is None:
        return struct.pack(">I", 0)
    return struct.pack(
        ">IQIIIII",
        A_SIZE | A_UIDGID | A_PERMS | A_TIMES,
        st.st_size,
        st.st_uid,
        st.st_gid,
        st.st_mode,
        int(st.st_atime),
        int(st.st_mtime),
    )


def _longname(name: str, st: os.stat_result) -> str:
    when = time.strftime("%b %d %H:%M", time.localtime(st.st_mtime))
    return f"{stat.filemode(st.st_mode)} 1 {st.st_uid} {st.st_gid} {st.st_size} {when} {name}"


@dataclass
class Dir:
    path: str  # virtual
    entries: list[str] | None = None


class Server:
    def __init__(
        self, root: str, apps: list[str], owners: dict[str, tuple[int, int]] | None = None
    ) -> None:
        """`owners`: app -> (uid, gid) its files are reached as (each app's
        tree is its own user's); the process must then have kept root as its
        real and saved uid (`main`), and `rest` is whom it acts as otherwise."""
        self.root = os.path.realpath(root)
        self.apps = sorted(set(apps))
        self.owners = owners or {}
        self.rest: tuple[int, int] | None = None
        self.acting: str | None = None
        self.handle_app: dict[bytes, str | None] = {}
        self.handles: dict[bytes, int | Dir] = {}  # an open file's fd, or a directory
        self.next_handle = 0

    # ------------------------------------------------------------ paths

    def vnorm(self, raw: bytes) -> str:
        text = raw.decode("utf-8", "surrogateescape")
        return posixpath.normpath(posixpath.join("/", text))

    def real(self, vpath: str, follow: bool = True) -> str | None:
        """The local path of a virtual one; None for the virtual root.

        What exists of it must resolve inside the app's directory: the path
        itself when it is followed, else its parent.
        """
        parts = [p for p in vpath.split("/") if p]
        if not parts:
            return None
        if parts[0] not in self.apps:
            raise SftpError(NO_SUCH_FILE, f"no app {parts[0]!r} here")
        self.become(parts[0])
        app_root = os.path.join(self.root, parts[0])
        path = os.path.join(app_root, *parts[1:])
        if follow and os.path.lexists(path):
            check = path
        else:
            check = os.path.dirname(path) if parts[1:] else app_root
        resolved = os.path.realpath(check)
        if resolved != app_root and not resolved.startswith(app_root + os.sep):
            raise SftpError(PERMISSION_DENIED, "outside the app's data directory")
        return path

    def writable(self, vpath: str, follow: bool = True) -> str:
        path = self.real(vpath, follow)
        if path is None or (vpath.count("/") == 1 and vpath.strip("/") in self.apps):
            raise SftpError(PERMISSION_DENIED, "the app directories themselves are fixed")
        return path

    # ------------------------------------------------------------ requests

    def become(self, app: str | None) -> None:
        """Act as `app`'s own user from here on (None: the tools' user).

        Every path is resolved by `real` and every open handle is used by
        `_file` after this, so the kernel judges each request as the owner
        of the tree it names: a rename from one app's tree into another's,
        or a link planted across them, meets that app's permissions.
        """
        if not self.owners or app == self.acting:
            return
        owner = self.owners.get(app) if app else None
        uid, gid = owner or self.rest or (os.getuid(), os.getgid())
        os.seteuid(0)
        os.setegid(gid)
        os.seteuid(uid)
        self.acting = app

    def handle(self, kind: int, r: Reader) -> bytes:
        rid = r.u32()
        self.become(None)
        try:
            return self._dispatch(kind, rid, r)
        except SftpError as exc:
            return self.status(rid, exc.code, str(exc))
        except OSError as exc:
            err = _os_error(exc)
            return self.status(rid, err.code, str(err))

    def status(self, rid: int, code: int, message: str = "") -> bytes:
        return bytes([STATUS]) + struct.pack(">II", rid, code) + _s(message) + _s("")

    def _handle(self, obj: int | Dir) -> bytes:
        self.next_handle += 1
        h = str(self.next_handle).encode()
        self.handles[h] = obj
        self.handle_app[h] = self.acting
        return h

    def _file(self, h: bytes) -> int:
        obj = self.handles.get(h)
        if not isinstance(obj, int):
            raise SftpError(FAILURE, "invalid handle")
        self.become(self.handle_app.get(h))
        return obj

    def _stat(self, vpath: str, follow: bool) -> os.stat_result | None:
        path = self.real(vpath, follow)
        if path is None:
            return os.stat(self.root)
        return os.stat(path) if follow else os.lstat(path)

    def _set(self, path: str | int, attrs: dict[str, int]) -> None:
        if "size" in attrs:
            os.truncate(path, attrs["size"])
        if "mode" in attrs:
            os.chmod(path, attrs["mode"] & 0o7777 & ~0o6000)  # never setuid/setgid
        if "mtime" in attrs:
            os.utime(path, (attrs["atime"], attrs["mtime"]))

    def _dispatch(self, kind: int, rid: int, r: Reader) -> bytes:
        ok = self.status(rid, OK, "OK")
        if kind == REALPATH:
            v = self.vnorm(r.string())
            return bytes([NAME]) + struct.pack(">II", rid, 1) + _s(v) + _s(v) + _attrs(None)
        if kind in (STAT, LSTAT):
            v = self.vnorm(r.string())
            st = self._stat(v, follow=kind == STAT)
            return bytes([ATTRS]) + struct.pack(">I", rid) + _attrs(st)
        if kind == OPEN:
            v = self.vnorm(r.string())
            pflags = r.u32()
            attrs = r.attrs()
            flags = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            if pflags & F_WRITE:
                path = self.writable(v)
                flags |= os.O_RDWR if pflags & F_READ else os.O_WRONLY
                flags |= os.O_CREAT if pflags & F_CREAT else 0
                flags |= os.O_TRUNC if pflags & F_TRUNC else 0
                flags |= os.O_EXCL if pflags & F_EXCL else 0
                flags |= os.O_APPEND if pflags & F_APPEND else 0
            else:
                found = self.real(v)
                if found is None:
                    raise SftpError(FAILURE, "not a file")
                path = found
            mode = attrs.get("mode", 0o644) & 0o777
            fd = os.open(path, flags, mode)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise SftpError(FAILURE, "is a directory")
            return bytes([HANDLE]) + struct.pack(">I", rid) + _s(self._handle(fd))
        if kind == CLOSE:
            h = r.string()
            obj = self.handles.pop(h, None)
            self.handle_app.pop(h, None)
            if obj is None:
                raise SftpError(FAILURE, "invalid handle")
            if isinstance(obj, int):
                os.close(obj)
            return ok
        if kind == READ:
            fd = self._file(r.string())
            offset, length = r.u64(), min(r.u32(), MAX_READ)
            data = os.pread(fd, length, offset)
            if not data:
                return self.status(rid, EOF, "end of file")
            return bytes([DATA]) + struct.pack(">I", rid) + _s(data)
        if kind == WRITE:
            fd = self._file(r.string())
            offset, data = r.u64(), r.string()
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
            return ok
        if kind == FSTAT:
            st = os.fstat(self._file(r.string()))
            return bytes([ATTRS]) + struct.pack(">I", rid) + _attrs(st)
        if kind == SETSTAT:
            path = self.writable(self.vnorm(r.string()))
            self._set(path, r.attrs())
            return ok
        if kind == FSETSTAT:
            self._set(self._file(r.string()), r.attrs())
            return ok
        if kind == OPENDIR:
            v = self.vnorm(r.string())
            where = self.real(v)
            if where is not None and not os.path.isdir(where):
                raise SftpError(
                    NO_SUCH_FILE if not os.path.exists(where) else FAILURE, "not a directory"
                )
            return bytes([HANDLE]) + struct.pack(">I", rid) + _s(self._handle(Dir(v)))
        if kind == READDIR:
            obj = self.handles.get(r.string())
            if not isinstance(obj, Dir):
                raise SftpError(FAILURE, "invalid handle")
            if obj.entries is None:
                where = self.real(obj.path)
                names = self.apps if where is None else sorted(os.listdir(where))
                obj.entries = [".", "..", *names]
            batch, obj.entries = obj.entries[:100], obj.entries[100:]
            if not batch:
                return self.status(rid, EOF, "end of directory")
            out, count = b"", 0
            for name in batch:
                try:
                    st = self._stat(posixpath.join(obj.path, name), follow=False)
                except (SftpError, OSError):
                    continue  # vanished, or not ours to show
                if st is not None:
                    out += _s(name) + _s(_longname(name, st)) + _attrs(st)
                    count += 1
            return bytes([NAME]) + struct.pack(">II", rid, count) + out
        if kind == REMOVE:
            path = self.writable(self.vnorm(r.string()), follow=False)
            if os.path.isdir(path) and not os.path.islink(path):
                raise SftpError(FAILURE, "is a directory")
            os.unlink(path)
            return ok
        if kind == MKDIR:
            path = self.writable(self.vnorm(r.string()), follow=False)
            attrs = r.attrs()
            os.mkdir(path, attrs.get("mode", 0o755) & 0o777)
            return ok
        if kind == RMDIR:
            os.rmdir(self.writable(self.vnorm(r.string()), follow=False))
            return ok
        if kind == RENAME:
            src = self.writable(self.vnorm(r.string()), follow=False)
            dst = self.writable(self.vnorm(r.string()), follow=False)
            if os.path.lexists(dst):
                raise SftpError(FAILURE, "target exists")
            os.rename(src, dst)
            return ok
        if kind in (READLINK, SYMLINK):
            raise SftpError(OP_UNSUPPORTED, "symbolic links are not supported here")
        if kind == EXTENDED:
            raise SftpError(OP_UNSUPPORTED, "no extensions are supported")
        raise SftpError(OP_UNSUPPORTED, f"request type {kind} is not supported")


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def serve(server: Server, inp: BinaryIO, out: BinaryIO) -> None:
    while True:
        try:
            (length,) = struct.unpack(">I", _read_exact(inp, 4))
            if not 1 <= length <= MAX_PACKET:
                return
            packet = _read_exact(inp, length)
        except EOFError:
            return
        kind, body = packet[0], Reader(packet[1:])
        if kind == INIT:
            reply = bytes([VERSION]) + struct.pack(">I", 3)
        else:
            try:
                reply = server.handle(kind, body)
            except SftpError:
                return  # a request too short to carry its id: not a client we can talk to
        out.write(struct.pack(">I", len(reply)) + reply)
        out.flush()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: sftpd ROOT UID GID [APP[:APP_UID]...]", file=sys.stderr)
        return 2
    root, uid, gid = argv[0], int(argv[1]), int(argv[2])
    apps, owners = parse_apps(argv[3:])
    server = Server(root, apps)
    if os.geteuid() == 0 and uid != 0:
        os.setgroups([])
        if owners:
            # Root stays the real and saved uid only to change hats between
            # apps (Server.become); every request runs as a tenant or as `uid`.
            server.owners, server.rest = owners, (uid, gid)
            server.acting = "?"  # not yet anyone: the first become() sets it
            server.become(None)
        else:
            os.setgid(gid)
            os.setuid(uid)
    os.umask(0o022)
    serve(server, sys.stdin.buffer, sys.stdout.buffer)
    return 0


def parse_apps(args: list[str]) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """`APP` or `APP:UID` (the app's own user, whose group has the same id)."""
    apps, owners = [], {}
    for arg in args:
        app, sep, uid = arg.partition(":")
        apps.append(app)
        if sep:
            owners[app] = (int(uid), int(uid))
    return apps, owners


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
