"""The per-instance shim: holds one instance so that it outlives its runner.

Theory of operation (containerd-shim, conmon). The runner starts one shim per
instance, in its own session and with no parent-death signal, as

    python -I -S .../roost/runner/shim.py DIR

(a plain script: the standard library only, no site-packages, so its memory
stays small). DIR (the runner's `DATA/runner/shims/<instance>/`, root's,
0700) holds `spec.json`, written by the runner: what to exec and what the
child does between fork and exec, as data (join the cgroup's `cgroup.procs`
files, the umask, the signals bubblewrap must ignore). The shim reads and
removes it, binds `DIR/shim.sock`, forks the instance and says one JSON line
on its stdout: `{"pid": N, "started": T}` or `{"error": "..."}`.

The instance is the shim's child: its own session and process group, and
PR_SET_PDEATHSIG=SIGKILL pointing at the shim (bwrap's --die-with-parent
too), so it dies with its shim and never with the runner. The shim holds its
stdout and stderr pipes and reads them always, so the app never blocks on a
full pipe: output goes into a ring of frames bounded in bytes (the oldest
dropped first, and counted) that the attached runner drains; with no runner
attached it just fills. The shim reaps the instance (a pidfd wakes it; the
leftovers of its process group are SIGKILLed while the leader is a zombie,
as `roost.proc.wait.wait_group` does), drains the pipes and queues the exit
frame, then waits, however long, for a runner to collect the status; then
it removes its socket and exits.

Protocol on the socket: frames of a kind byte, a 4-byte big-endian length
and a payload. One runner at a time: a new connection replaces the old (the
old runner is gone: a crash or a hand-over). On connect the shim sends a
status frame (`t`: pid, start time, exit status once exited, bytes dropped),
then the ring (`o`, `e`: output chunks), then live output and, once the
instance has exited and its pipes are drained, `x` (the exit status). The
runner sends `s` (a signal number: to the instance's process group while it
is not reaped), `k` (SIGKILL everything in its cgroup) and `c` (collect: exit
once the instance has exited, at once if it has). Everything the shim reads
is checked; a bad frame closes that connection, never the shim.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque

HEADER = struct.Struct("!cI")
MAX_FRAME = 1 << 20
SOCKET_NAME = "shim.sock"
SPEC_NAME = "spec.json"
# Output kept while nobody reads it (bytes of frames).
DEFAULT_RING_BYTES = 1 << 20
# After the leader exits, how long to wait for the pipes to reach EOF (a
# process that escaped the group may still hold them open).
DRAIN_TIMEOUT_S = 2.0
READ_CHUNK = 64 * 1024
PR_SET_PDEATHSIG = 1

# Shim -> runner.
STATUS, STDOUT, STDERR, EXIT = b"t", b"o", b"e", b"x"
# Runner -> shim.
SIGNAL, KILL_CGROUP, COLLECT = b"s", b"k", b"c"


class ProtocolError(ValueError):
    """A frame that breaks the protocol (the message says how)."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def parse_frames(buf: bytearray, kinds: bytes) -> list[tuple[bytes, bytes]]:
    """Take the complete frames off the front of `buf` (pure).

    Raises ProtocolError on an unknown kind or an oversized length.
    """
    out: list[tuple[bytes, bytes]] = []
    while len(buf) >= HEADER.size:
        kind, length = HEADER.unpack_from(buf)
        if kind not in [kinds[i : i + 1] for i in range(len(kinds))]:
            raise ProtocolError(f"unknown frame kind {kind!r}")
        if length > MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes (at most {MAX_FRAME})")
        if len(buf) < HEADER.size + length:
            break
        out.append((kind, bytes(buf[HEADER.size : HEADER.size + length])))
        del buf[: HEADER.size + length]
    return out


def parse_signal(payload: bytes) -> int:
    """The signal number an `s` frame names (1..64), or ProtocolError."""
    text = payload.decode("ascii", "replace")
    if not text.isdigit() or not 0 < int(text) < 65:
        raise ProtocolError(f"bad signal {text[:16]!r}")
    return int(text)


class Ring:
    """Frames waiting for a reader, bounded in bytes: the oldest go first (pure)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: deque[bytes] = deque()
        self.size = 0
        self.dropped = 0  # payload bytes lost to the bound

    def push(self, data: bytes, keep: bool = False) -> None:
        """Queue a frame; unless `keep`, drop the oldest while over the bound."""
        self.frames.append(data)
        self.size += len(data)
        while not keep and self.size > self.limit and len(self.frames) > 1:
            old = self.frames.popleft()
            self.size -= len(old)
            self.dropped += len(old) - HEADER.size

    def pop(self) -> bytes | None:
        if not self.frames:
            return None
        data = self.frames.popleft()
        self.size -= len(data)
        return data


def strings(spec: dict[str, object], key: str) -> list[str]:
    """A list of strings from the spec (the runner wrote it; still, no surprises)."""
    value = spec.get(key)
    return [str(x) for x in value] if isinstance(value, list) else []


def status_of(pid: int, started: float, returncode: int | None, dropped: int) -> dict[str, object]:
    return {
        "pid": pid,
        "started": started,
        "exited": returncode is not None,
        "returncode": returncode,
        "dropped": dropped,
        "shim": os.getpid(),
    }


def bind_path(directory_fd: int, name: str) -> str:
    """A socket path of any directory depth: sun_path holds 108 bytes, so
    reach it through the directory's descriptor (Linux resolves /proc/self/fd)."""
    return f"/proc/self/fd/{directory_fd}/{name}"


# ------------------------------------------------------------ the child


def _child(spec: dict[str, object], out_w: int, err_w: int, err_pipe: int, shim: int) -> None:
    """Between fork and exec (never returns): what Prepared.preexec did, as data."""
    try:
        os.setsid()
        for path in strings(spec, "cgroup_procs"):
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        # Python ignores SIGPIPE (and SIGXFSZ); an exec'd program expects the default.
        for default in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(default, signal.SIG_DFL)
        umask = spec.get("umask")
        if isinstance(umask, int):
            os.umask(umask)
        for ignored in strings(spec, "ignore"):
            signal.signal(int(ignored), signal.SIG_IGN)
        # Imported here, in the child only (the shim is single-threaded, so
        # importing after the fork is safe): the shim itself stays smaller.
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != shim:
            os._exit(1)  # the shim is already gone: the signal will never come
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.chdir(str(spec["cwd"]))
        argv = strings(spec, "argv")
        env = spec["env"]
        assert isinstance(env, dict)
        os.execvpe(argv[0], argv, {str(k): str(v) for k, v in env.items()})
    except BaseException as exc:  # anything: say it, and exit
        with open(err_pipe, "wb", closefd=False) as f:
            f.write(f"{type(exc).__name__}: {exc}".encode()[:4000])
    os._exit(127)


def spawn(spec: dict[str, object]) -> tuple[int, int, int]:
    """Fork and exec the instance; (pid, stdout fd, stderr fd). OSError when it could not."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    check_r, check_w = os.pipe()  # close-on-exec: EOF without data means exec worked
    shim = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        os.close(check_r)
        _child(spec, out_w, err_w, check_w, shim)
    for fd in (out_w, err_w, check_w):
        os.close(fd)
    with open(check_r, "rb") as f:
        failure = f.read()
    if failure:
        os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)
        raise OSError(failure.decode("utf-8", "replace"))
    return pid, out_r, err_r


# ------------------------------------------------------------ the shim


class Shim:
    """The loop: one instance, its pipes, its exit status, at most one runner."""

    def __init__(self, listener: socket.socket, spec: dict[str, object]) -> None:
        self.listener = listener
        self.spec = spec
        self.sel = selectors.DefaultSelector()
        ring = spec.get("ring_bytes")
        self.ring = Ring(ring if isinstance(ring, int) and ring > 0 else DEFAULT_RING_BYTES)
        self.pid = 0
        self.started = 0.0
        self.returncode: int | None = None
        self.exited_at = 0.0
        self.pipes: dict[int, bytes] = {}
        self.exit_queued = False
        self.collect = False
        self.client: socket.socket | None = None
        self.inbox = bytearray()
        self.sending = b""

    def start(self) -> None:
        self.pid, out_r, err_r = spawn(self.spec)
        self.started = time.time()
        for fd, kind in ((out_r, STDOUT), (err_r, STDERR)):
            os.set_blocking(fd, False)
            self.pipes[fd] = kind
            self.sel.register(fd, selectors.EVENT_READ, "pipe")
        self.pidfd = os.pidfd_open(self.pid)
        self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")

    def run(self) -> None:
        while not (self.collect and self.exit_queued):
            timeout = None
            if self.returncode is not None and not self.exit_queued:
                timeout = max(0.0, self.exited_at + DRAIN_TIMEOUT_S - time.monotonic())
            for key, mask in self.sel.select(timeout):
                what = key.data
                if what == "pipe":
                    self._read_pipe(key.fd)
                elif what == "exit":
                    self._reap()
                elif what == "accept":
                    self._accept()
                elif what == "client":
                    if mask & selectors.EVENT_READ:
                        self._read_client()
                    if self.client is not None and mask & selectors.EVENT_WRITE:
                        self._write_client()
            if self.returncode is not None and not self.exit_queued and self._drained():
                self._queue_exit()
            self._want_write()

    # ---------------------------------------------------------- the instance

    def _read_pipe(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        if data:
            self.ring.push(frame(self.pipes[fd], data))
            return
        self.sel.unregister(fd)
        os.close(fd)
        del self.pipes[fd]

    def _reap(self) -> None:
        # A zombie's pid (and so its group id) cannot be reused: end its group first.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self.exited_at = time.monotonic()
        self.sel.unregister(self.pidfd)
        os.close(self.pidfd)

    def _drained(self) -> bool:
        """The pipes are closed, or waited for long enough after the exit."""
        return not self.pipes or time.monotonic() >= self.exited_at + DRAIN_TIMEOUT_S

    def _queue_exit(self) -> None:
        for fd in list(self.pipes):
            self.sel.unregister(fd)
            os.close(fd)
        self.pipes.clear()
        self.exit_queued = True
        # Never dropped for the bound: pushed past it, last.
        self.ring.push(frame(EXIT, json.dumps({"returncode": self.returncode}).encode()), keep=True)

    def _signal(self, sig: int) -> None:
        if self.returncode is not None:
            return  # reaped: its group id may be someone else's now
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_cgroup(self) -> None:
        for _ in range(50):
            pids: set[int] = set()
            for path in strings(self.spec, "cgroup_procs"):
                try:
                    with open(path) as f:
                        pids.update(int(x) for x in f.read().split())
                except (OSError, ValueError):
                    pass
            pids.discard(os.getpid())
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.002)

    # ---------------------------------------------------------- the runner

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        self._drop_client()  # one runner at a time: the newest
        conn.setblocking(False)
        self.client = conn
        self.inbox = bytearray()
        status = status_of(self.pid, self.started, self.returncode, self.ring.dropped)
        self.sending = frame(STATUS, json.dumps(status).encode())
        self.sel.register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE, "client")

    def _drop_client(self) -> None:
        if self.client is None:
            return
        self.sel.unregister(self.client)
        self.client.close()
        self.client = None
        self.sending = b""  # a frame cut short is lost with its reader

    def _read_client(self) -> None:
        assert self.client is not None
        try:
            data = self.client.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self.inbox += data
        try:
            if len(self.inbox) > 4096:
                raise ProtocolError("too much unread input")
            for kind, payload in parse_frames(self.inbox, SIGNAL + KILL_CGROUP + COLLECT):
                if kind == SIGNAL:
                    self._signal(parse_signal(payload))
                elif kind == KILL_CGROUP:
                    self._kill_cgroup()
                elif kind == COLLECT:
                    self.collect = True
        except ProtocolError:
            self._drop_client()

    def _write_client(self) -> None:
        assert self.client is not None
        while True:
            if not self.sending:
                self.sending = self.ring.pop() or b""
                if not self.sending:
                    return
            try:
                sent = self.client.send(self.sending)
            except BlockingIOError:
                return
            except OSError:
                self._drop_client()
                return
            self.sending = self.sending[sent:]

    def _want_write(self) -> None:
        if self.client is None:
            return
        events = selectors.EVENT_READ
        if self.sending or self.ring.frames:
            events |= selectors.EVENT_WRITE
        self.sel.modify(self.client, events, "client")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: shim.py DIR", file=sys.stderr)
        return 2
    directory = argv[1]
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    spec_path = os.path.join(directory, SPEC_NAME)
    with open(spec_path, "rb") as f:
        spec = json.loads(f.read())
    os.unlink(spec_path)  # it holds the app's environment
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = bind_path(dir_fd, SOCKET_NAME)
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass
    listener.bind(sock_path)
    listener.listen(4)
    shim = Shim(listener, spec)
    try:
        shim.start()
    except OSError as exc:
        os.unlink(sock_path)
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps({"pid": shim.pid, "started": shim.started}), flush=True)
    # Nobody reads these once the runner has its answer; a shim never prints.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        shim.run()
    finally:
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
