"""The per-instance shim: holds one instance so that it outlives its runner.

Theory of operation (containerd-shim, conmon). The runner starts one shim per
instance, in its own session and with no parent-death signal, as

    python -I -S .../roost/runner/shim.py DIR

(a plain script: the standard library only, no site-packages, so its memory
stays small), or, as a rule, forks it from its fork server
(runner/shimfork.py), which then runs `main` on DIR as that command does.
DIR (the runner's `DATA/runner/shims/<instance>/`, root's, 0700) holds
`spec.json`, written by the runner: what to exec and what the child does
between fork and exec, as data (join the cgroup's `cgroup.procs` files, the
umask, the signals bubblewrap must ignore). The shim reads and
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

Sessions (`run APP CMD`, cron jobs: the spec has a `session` object) differ
in four ways. The child's stdin is a pipe, or, with `"pty": true`, all three
streams are the slave of a pty whose master the shim holds (the child's
controlling terminal: ^C, job control and window changes work). The runner
also sends `i` (input, written in order), `f` (end of input) and `w`
("ROWS COLS": the window size). Output is numbered (the first output frame
of a connection is number `first_seq` of the status frame, the next ones
follow) and kept until the runner acknowledges it with `a` (a number: all
output up to it was delivered), not merely sent: a new runner gets again
what the old one read but whose reader never had; reading pauses while more
than the ring's bound waits, which slows the process rather than dropping
its output. The status frame says how many input bytes were taken
(`input_offset`), so a client resending input after a restart is not
written twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

# The protocol's pure parts: a sibling module, by path when run as a script
# (-I -S: no package on the path, and none of its imports' memory).
if __package__:
    from roost.runner.shimproto import (
        ACK,
        COLLECT,
        DEFAULT_RING_BYTES,
        DRAIN_TIMEOUT_S,
        EXIT,
        INPUT,
        INPUT_EOF,
        KILL_CGROUP,
        MAX_FRAME,
        PR_SET_PDEATHSIG,
        READ_CHUNK,
        RUNNER_KINDS,
        SIGNAL,
        SOCKET_NAME,
        SPEC_NAME,
        STATUS,
        STDERR,
        STDOUT,
        WINSIZE,
        Kept,
        ProtocolError,
        Ring,
        bind_path,
        frame,
        parse_frames,
        parse_number,
        parse_signal,
        parse_winsize,
        session_of,
        status_of,
        strings,
    )
else:  # pragma: no cover (the shim's own process)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import shimproto as _proto

    globals().update({k: v for k, v in vars(_proto).items() if not k.startswith("__")})


# ------------------------------------------------------------ the child


def _child(spec: dict[str, object], fds: tuple[int, int, int], err_pipe: int, shim: int) -> None:
    """Between fork and exec (never returns): what Prepared.preexec did, as data.

    `fds`: its stdin, stdout and stderr; a pty slave on all three becomes its
    controlling terminal."""
    try:
        os.setsid()
        if fds[0] == fds[1] == fds[2]:
            import fcntl
            import termios

            fcntl.ioctl(fds[0], termios.TIOCSCTTY, 0)
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
        stdin = os.open(os.devnull, os.O_RDONLY) if fds[0] < 0 else fds[0]
        for target, fd in enumerate((stdin, fds[1], fds[2])):
            os.dup2(fd, target)
        os.chdir(str(spec["cwd"]))
        argv = strings(spec, "argv")
        env = spec["env"]
        assert isinstance(env, dict)
        os.execvpe(argv[0], argv, {str(k): str(v) for k, v in env.items()})
    except BaseException as exc:  # anything: say it, and exit
        with open(err_pipe, "wb", closefd=False) as f:
            f.write(f"{type(exc).__name__}: {exc}".encode()[:4000])
    os._exit(127)


def _streams(session: dict[str, object] | None) -> tuple[list[int], list[int]]:
    """(the shim's ends: stdin, stdout, stderr; the child's), -1 for none.

    An instance: no stdin, two pipes. A session: a stdin pipe too, or one pty
    (the master ours for all three, the slave the child's)."""
    if session is not None and session.get("pty"):
        import fcntl
        import termios

        master, slave = os.openpty()
        rows, cols = (session.get(k) for k in ("rows", "cols"))
        size = (
            min(max(v, 1), 10000) if isinstance(v, int) else d for v, d in ((rows, 24), (cols, 80))
        )
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
        return [master, master, -1], [slave, slave, slave]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if session is None:
        return [-1, out_r, err_r], [-1, out_w, err_w]
    in_r, in_w = os.pipe()
    return [in_w, out_r, err_r], [in_r, out_w, err_w]


def spawn(spec: dict[str, object]) -> tuple[int, list[int]]:
    """Fork and exec the instance; (pid, [stdin, stdout, stderr] of the shim's
    ends, -1 for none). OSError when it could not."""
    ours, theirs = _streams(session_of(spec))
    check_r, check_w = os.pipe()  # close-on-exec: EOF without data means exec worked
    shim = os.getpid()
    pid = os.fork()
    if pid == 0:
        for fd in {*ours, check_r} - {-1}:
            os.close(fd)
        _child(spec, (theirs[0], theirs[1], theirs[2]), check_w, shim)
    for fd in {*theirs, check_w} - {-1}:
        os.close(fd)
    with open(check_r, "rb") as f:
        failure = f.read()
    if failure:
        os.waitpid(pid, 0)
        for fd in set(ours) - {-1}:
            os.close(fd)
        raise OSError(failure.decode("utf-8", "replace"))
    return pid, ours


# ------------------------------------------------------------ the shim


class Shim:
    """The loop: one instance, its pipes, its exit status, at most one runner."""

    def __init__(self, listener: socket.socket, spec: dict[str, object]) -> None:
        self.listener = listener
        self.spec = spec
        self.sel = selectors.DefaultSelector()
        ring = spec.get("ring_bytes")
        limit = ring if isinstance(ring, int) and ring > 0 else DEFAULT_RING_BYTES
        self.ring = Ring(limit)
        self.session = session_of(spec)
        # A session's output: numbered, kept until acknowledged.
        self.kept = Kept(limit) if self.session is not None else None
        self.paused = False  # a session's streams unread while too much waits
        self.exit_frame = b""
        self.exit_sent = False  # on this connection
        self.stdin = -1
        self.master = -1  # a session's pty
        self.pending_input = bytearray()
        self.input_offset = 0
        self.input_eof = False
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
        self.pid, (self.stdin, out_r, err_r) = spawn(self.spec)
        self.started = time.time()
        if self.stdin >= 0:
            os.set_blocking(self.stdin, False)
        if self.stdin == out_r:
            self.master = out_r
        for fd, kind in ((out_r, STDOUT), (err_r, STDERR)):
            if fd < 0 or fd in self.pipes:
                continue
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
            if self.pending_input:  # a full pipe or pty: try again shortly
                timeout = min(timeout if timeout is not None else 1.0, 0.02)
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
            if self.pending_input or self.input_eof:
                self._write_input()
            if self.returncode is not None and not self.exit_queued and self._drained():
                self._queue_exit()
            self._want_write()

    # ---------------------------------------------------------- the instance

    def _read_pipe(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO on a pty master: every slave is closed
            data = b""
        if data and self.kept is not None:
            self.kept.push(frame(self.pipes[fd], data))
            if self.kept.full and not self.paused:
                self.paused = True
                for pipe in self.pipes:
                    self.sel.unregister(pipe)
            return
        if data:
            self.ring.push(frame(self.pipes[fd], data))
            return
        if not self.paused:
            self.sel.unregister(fd)
        self._close_stream(fd)

    def _close_stream(self, fd: int) -> None:
        self.pipes.pop(fd, None)
        if fd == self.stdin:  # the pty's master: input goes nowhere now
            self.stdin = -1
            self.pending_input.clear()
        os.close(fd)

    def _resume(self) -> None:
        if self.paused and self.kept is not None and not self.kept.full:
            self.paused = False
            for pipe in self.pipes:
                self.sel.register(pipe, selectors.EVENT_READ, "pipe")

    def _write_input(self) -> None:
        """Write what input waits (never blocking); close a pipe's stdin at its end."""
        while self.pending_input and self.stdin >= 0:
            try:
                n = os.write(self.stdin, self.pending_input[:READ_CHUNK])
            except BlockingIOError:
                return
            except OSError:  # nobody reads it any more (EPIPE): drop it
                self.pending_input.clear()
                break
            del self.pending_input[:n]
        if self.input_eof and self.stdin >= 0 and self.stdin != self.master:
            os.close(self.stdin)  # a pipe: the process sees its end (a pty has none)
            self.stdin = -1
        if self.stdin < 0:
            self.pending_input.clear()

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
        """The pipes are closed, or waited for long enough after the exit (a
        session's reader being slow does not count: its output is kept)."""
        if self.paused and self.pipes:
            self.exited_at = time.monotonic()
            return False
        return not self.pipes or time.monotonic() >= self.exited_at + DRAIN_TIMEOUT_S

    def _queue_exit(self) -> None:
        for fd in list(self.pipes):
            if not self.paused:
                self.sel.unregister(fd)
            self._close_stream(fd)
        if self.stdin >= 0:
            os.close(self.stdin)
            self.stdin = -1
        self.pending_input.clear()
        self.exit_queued = True
        if self.kept is not None:  # sent after all the kept output, to every reader
            self.exit_frame = frame(EXIT, json.dumps({"returncode": self.returncode}).encode())
            return
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
        if self.kept is not None:
            self.kept.rewind()
            self.exit_sent = False
        status = status_of(
            self.pid,
            self.started,
            self.returncode,
            self.ring.dropped,
            self.kept.first_seq if self.kept is not None else 1,
            self.input_offset,
        )
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
            if len(self.inbox) > MAX_FRAME + 4096:
                raise ProtocolError("too much unread input")
            for kind, payload in parse_frames(self.inbox, RUNNER_KINDS):
                if kind in INPUT + INPUT_EOF + WINSIZE + ACK:
                    self._session_frame(kind, payload)
                elif kind == SIGNAL:
                    self._signal(parse_signal(payload))
                elif kind == KILL_CGROUP:
                    self._kill_cgroup()
                elif kind == COLLECT:
                    self.collect = True
        except ProtocolError:
            self._drop_client()

    def _session_frame(self, kind: bytes, payload: bytes) -> None:
        if self.kept is None:
            raise ProtocolError(f"{kind!r} is for sessions")
        if kind == INPUT:
            if self.stdin >= 0 and not self.input_eof:
                self.pending_input += payload
            self.input_offset += len(payload)  # taken, written or not
        elif kind == INPUT_EOF:
            self.input_eof = True
        elif kind == WINSIZE:
            rows, cols = parse_winsize(payload)
            if self.master >= 0 and self.returncode is None:
                import fcntl
                import termios

                # The kernel sends the foreground group SIGWINCH.
                with contextlib.suppress(OSError):
                    fcntl.ioctl(
                        self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0)
                    )
        else:
            self.kept.ack(parse_number(payload))
            self._resume()

    def _next_frame(self) -> bytes:
        if self.kept is None:
            return self.ring.pop() or b""
        data = self.kept.pop()
        if data is None and self.exit_frame and not self.exit_sent:
            self.exit_sent = True
            data = self.exit_frame
        return data or b""

    def _write_client(self) -> None:
        assert self.client is not None
        while True:
            if not self.sending:
                self.sending = self._next_frame()
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
        if self.sending or self.ring.frames or self._unsent():
            events |= selectors.EVENT_WRITE
        self.sel.modify(self.client, events, "client")

    def _unsent(self) -> bool:
        if self.kept is None:
            return False
        return self.kept.sent < len(self.kept.frames) or bool(
            self.exit_frame and not self.exit_sent
        )


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
