"""The shims' fork server: one interpreter that forks every shim of a runner.

Why (issue 21, the per-app overhead): a shim run as its own interpreter
(`python -I -S shim.py DIR`) held about 5.6 MB of its own (USS), twice per
app in the default formation: more than half of what the platform spent
per app. Forked from one process that has imported the shim and frozen
its objects (gc.freeze: the collector no longer writes to them, so their
pages stay shared), a shim's own memory is the pages it writes: about
1.3 MB. It also starts in a fork's time, not an interpreter's.

Theory of operation. The runner starts this script (`python -I -S
shimfork.py`, the standard library only, like the shim) with its stdin one
end of a SOCK_SEQPACKET socket pair, and keeps the other end. Each request
is one message: a shim's directory (the `DIR` the shim's command line
took) and one file descriptor, the write end of a pipe the runner reads
the shim's one-line answer from (`{"pid": N, ...}` or `{"error": ...}`),
as it read a shim's stdout. The server forks; the child leaves the
server's session and state behind it (a session of its own, the socket
closed, that descriptor as its stdout) and becomes the shim
(`shim.main`), exactly what the command line ran, then exits. The server
answers with the child's pid in decimal, or `error: ...`.

The server is the shims' parent only while it lives: it reaps those that
exit meanwhile, and ends when the runner's end of the pair closes (the
runner exited, crashed or handed over). Its shims go on, reparented like
any orphan (to `roost up`, a subreaper, on one machine), as the shims the
runner started itself did: nothing of the shim protocol depends on who
forked it.
"""

from __future__ import annotations

import array
import gc
import os
import select
import socket
import sys

if __package__:
    from roost.runner import shim
else:  # pragma: no cover (the server's own process: -I -S, no package on the path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import shim  # type: ignore[no-redef]

MAX_REQUEST = 4096
REAP_EVERY_S = 1.0


def _request(sock: socket.socket) -> tuple[str, int] | None:
    """(directory, answer fd) of the next request; None at the end.
    ValueError for a message that is not one path and one descriptor."""
    fds = array.array("i")
    msg, ancillary, _flags, _addr = sock.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not msg and not fds:
        return None
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request takes one descriptor")
    directory = msg.decode("utf-8", "replace")
    if not os.path.isabs(directory) or "\0" in directory:
        os.close(fds[0])
        raise ValueError(f"not an absolute path: {directory!r}")
    return directory, fds[0]


def _child(sock: socket.socket, directory: str, answer: int) -> None:
    """The forked shim (never returns)."""
    code = 1
    try:
        os.setsid()
        sock.close()
        os.dup2(answer, 1)
        os.close(answer)
        code = shim.main(["shim.py", directory])
    finally:
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(sock: socket.socket) -> int:
    gc.collect()
    gc.freeze()  # what the shims inherit stays shared: see the module doc
    while True:
        _reap()
        ready, _, _ = select.select([sock], [], [], REAP_EVERY_S)
        if not ready:
            continue
        try:
            request = _request(sock)
        except ValueError as exc:
            sock.send(f"error: {exc}".encode())
            continue
        except OSError:
            return 0
        if request is None:
            return 0  # the runner is gone
        directory, answer = request
        sys.stdout.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(answer)
            sock.send(f"error: fork: {exc}".encode())
            continue
        if pid == 0:
            _child(sock, directory, answer)
        os.close(answer)
        sock.send(str(pid).encode())


def main() -> int:
    sock = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.close(null)
    return serve(sock)


if __name__ == "__main__":
    sys.exit(main())
