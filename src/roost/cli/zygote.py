"""`python -m roost.cli.zygote FD [--data DATA]`: the process `roost up` forks its roles from.

Theory of operation. Every role is a Python interpreter that imports much
the same base (asyncio, pyzmq, msgspec, click, psutil, psycopg, the wire and
toolkit modules) before its own modules; imported modules stay resident, so
each paid ~10-15 MB of its own for that base (issue 21). The zygote imports
the base once, freezes it (`gc.freeze()`: the collector never writes to
those objects again) and forks each role from itself, so the base's pages
are shared copy-on-write between the roles instead of being copied into
each (gunicorn's preload, Android's zygote). A role forked so runs exactly
what `python -m roost ARGS` would (`roost.cli.main`), with its own
environment, its own session, stderr and handed sockets where it asks.

It is single-threaded and runs no event loop, so forking is safe. It serves
one connection (a SOCK_SEQPACKET socket at fd FD, from `roost up`,
`roost.proc.forkserver`), one JSON message per packet:

  up -> zygote  {"args": [...], "env": {...}, "names": [...]}, with file
                descriptors attached: the child's stderr, then the sockets
                to hand over by socket activation (named by "names")
  zygote -> up  {"pid": N} for each request (or {"error": "..."}), and
                {"exit": N, "status": S} when a child ends (S as asyncio's
                returncode: the exit code, or -signal)

It exits once `roost up` closed the connection and its last child ended;
it dies with `roost up` (PR_SET_PDEATHSIG), and its children die with it,
which `roost up` notices as their exits. A role is still run on its own by
systemd (`roost <role>`): nothing here is needed for that.

Detached (`--detach IDLE_S`, which `roost up` passes when it is a
subreaper). A zygote kept for the platform's life held ~16 MB that no role
shared any more: the pages every role had copied (issue 21). So a role is
forked twice: the zygote forks a middle process, which forks the role and
exits at once, and the role, orphaned, is adopted by `roost up` (the
subreaper). The role then waits until it is adopted before it ties its
death to `roost up`'s (PR_SET_PDEATHSIG, armed earlier, would fire at the
middle process's exit). Its answer says so (`"detached": true`), and its
exit is `roost up`'s to wait for, as any child's. The zygote then has no
children and exits after IDLE_S without a request, saying
`{"bye": true}` first: every request sent after its last answer was never
read, so `roost up` sends it again to a new zygote. A zygote started by an
older `roost up` (a reload with newer code on disk) gets no `--detach`
and behaves as before.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

from roost.cli import zygote_fill
from roost.proc.spawn import ChildSetup

# What most roles import (each a few MB once imported); a module missing here
# is skipped, never an error: the roles import what they need themselves.
PRELOAD = (
    "asyncio",
    "zmq",
    "zmq.asyncio",
    "msgspec",
    "click",
    "psutil",
    "roost.cli.main",
    "roost.cli.daemons",
    "roost.settings",
    "roost.daemonize",
    "roost.metrics",
    "roost.wire.bootstrap",
    "roost.wire.rpc",
    "roost.wire.pubsub",
    "roost.wire.messages",
    "roost.proc.supervise",
    "roost.proc.run",
    "roost.appspec",
    "roost.images",
    "psycopg",
    "cryptography.x509",
    # Each imported by two roles or more (measured: sys.modules per role).
    "httpx",
    "sqlite3",
    "tarfile",
    "roost.aio",
    "roost.sysuser",
    "roost.appdirs",
    "roost.patroni",
    "roost.proc.wait",
    "roost.appspec.bundle_config",
    "roost.appspec.runtime",
    "roost.appspec.service_env",
    "roost.appspec.webserving",
    "roost.images.archive",
    "roost.images.eviction",
    "roost.images.pull",
    "roost.images.retention",
    "roost.images.serve",
    "roost.tenant.launch",
    "roost.tenant.identity",
    "roost.datadir.shared",
    "roost.datadir.swap",
    "roost.datadir.weedquota",
    "roost.sessions.server",
)
MAX_FDS = 16
PR_SET_NAME = 15
PACKET = 1 << 20
# What zygote_fill made: kept for the zygote's life.
_FILLED: list[object] = []


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import `modules`; those that failed to, by name."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
    return failed


def returncode(status: int) -> int:
    """A wait status as asyncio reports it: the exit code, or -signal."""
    return os.waitstatus_to_exitcode(status)


def _send(conn: socket.socket, msg: dict[str, Any]) -> None:
    try:
        conn.send(json.dumps(msg).encode())
    except OSError:
        pass  # roost up is gone: its children go with it


def _child(
    conn: socket.socket, req: dict[str, Any], fds: list[int], parent: int, middle: int = 0
) -> None:
    """In the forked child: become the role (never returns). `middle`: the
    process between the zygote and it (detached), whose exit hands it to
    `parent`."""
    code = 70
    try:
        conn.close()
        # Adopted first: a parent-death signal armed now would fire when the
        # middle process exits (its exit is immediate, right after the fork).
        while middle and os.getppid() == middle:
            time.sleep(0.001)
        # As every child Roost starts: its own session, dead with its parent.
        ChildSetup(parent)()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        names: list[str] = req.get("names", [])
        stderr, sockets = fds[0], fds[1:]
        # Handed sockets at 3, 4, ... (socket activation), out of the way first.
        high = [fcntl_dup(fd, 3 + len(sockets) + 8) for fd in sockets]
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(stderr, 2)
        for fd in [devnull, stderr, *sockets]:
            if fd > 2:
                os.close(fd)
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)  # dup2 leaves the copy inheritable, as handed sockets must be
            os.close(fd)
        os.environ.clear()
        os.environ.update(req["env"])
        if sockets:
            os.environ.update(
                LISTEN_FDS=str(len(sockets)),
                LISTEN_FDNAMES=":".join(names),
                LISTEN_PID=str(os.getpid()),
            )
        sys.argv = ["roost", *req["args"]]
        _name(sys.argv)
        # The base stays frozen in the role too: a collection that walked it
        # would write to every object's header, copying the shared pages.
        from roost.cli.main import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _name(argv: list[str]) -> None:
    """Its name in ps and top ("roost runner"): its command line is the
    zygote's, which names the data directory only."""
    role = argv[3] if len(argv) > 3 and argv[1] == "--data" else ""
    if role:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, f"roost {role}"[:15].encode(), 0, 0, 0)


def fcntl_dup(fd: int, at_least: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD, at_least)


def _id(data: bytes) -> object:
    try:
        return json.loads(data).get("id")
    except Exception:
        return None


def serve(conn: socket.socket) -> None:
    """Fork a child per request and report each one's end, until the
    connection is closed and no child is left."""
    children: set[int] = set()
    me = os.getpid()
    open_ = True
    while open_ or children:
        ready = select.select([conn] if open_ else [], [], [], 0.2)[0]
        if ready:
            try:
                data, fds, _flags, _addr = socket.recv_fds(conn, PACKET, MAX_FDS)
            except OSError:
                data, fds = b"", []
            if not data:
                open_ = False
            else:
                try:
                    req = json.loads(data)
                    if not fds:
                        raise ValueError("no stderr descriptor")
                    pid = os.fork()
                except Exception as exc:
                    for fd in fds:
                        os.close(fd)
                    _send(conn, {"id": _id(data), "error": f"{type(exc).__name__}: {exc}"})
                    continue
                if pid == 0:
                    _child(conn, req, fds, me)
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                # Before any report of its end: the asker knows it first.
                _send(conn, {"id": req.get("id"), "pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            if pid in children:
                children.discard(pid)
                _send(conn, {"exit": pid, "status": returncode(status)})


def detached_fork(conn: socket.socket, req: dict[str, Any], fds: list[int], parent: int) -> int:
    """Fork the role through a middle process that exits at once, so that
    `parent` (a subreaper) adopts it; the role's pid."""
    r, w = os.pipe()
    try:
        middle = os.fork()
        if middle == 0:
            try:
                os.close(r)
                me = os.getpid()
                pid = os.fork()
                if pid == 0:
                    os.close(w)
                    _child(conn, req, fds, parent, middle=me)
                os.write(w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(w)
        w = -1
        os.waitpid(middle, 0)
        said = os.read(r, 32)
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    if not said:
        raise OSError("the middle process could not fork the role")
    return int(said)


def serve_detached(conn: socket.socket, idle_s: float) -> None:
    """Fork each request's role detached (adopted by `roost up`); exit when
    the connection is closed or after `idle_s` with no request."""
    parent = os.getppid()
    last = time.monotonic()
    while True:
        wait = last + idle_s - time.monotonic()
        if wait <= 0:
            # Nothing unanswered was read: whatever comes after this is sent again.
            _send(conn, {"bye": True})
            return
        if not select.select([conn], [], [], wait)[0]:
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, PACKET, MAX_FDS)
        except OSError:
            return
        if not data:
            return  # roost up closed it; the roles are its own children
        last = time.monotonic()
        try:
            req = json.loads(data)
            if not fds:
                raise ValueError("no stderr descriptor")
            pid = detached_fork(conn, req, fds, parent)
        except Exception as exc:
            _send(conn, {"id": _id(data), "error": f"{type(exc).__name__}: {exc}"})
            continue
        finally:
            for fd in fds:
                os.close(fd)
        _send(conn, {"id": req.get("id"), "pid": pid, "detached": True})


def idle_after(argv: list[str]) -> float | None:
    """`--detach IDLE_S` among the arguments after FD, else None (an older
    `roost up`: its children stay the zygote's)."""
    if "--detach" in argv[:-1]:
        return float(argv[argv.index("--detach") + 1])
    return None


def main() -> None:
    # argv: FD, `--detach IDLE_S`, then what only names it in ps (`--data DATA`, roost up's own).
    fd = int(sys.argv[1])
    idle_s = idle_after(sys.argv[2:])
    conn = socket.socket(fileno=fd)
    preload()
    gc.collect()
    # Everything imported so far is never collected nor written by the
    # collector again: its pages stay shared with every child.
    gc.freeze()
    # And a child's new objects go to pages of its own, not into the free
    # slots between the base's objects (zygote_fill).
    global _FILLED
    _FILLED = zygote_fill.fill()
    gc.freeze()
    if idle_s is None:
        serve(conn)
    else:
        serve_detached(conn, idle_s)


if __name__ == "__main__":
    main()
