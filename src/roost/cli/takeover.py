"""A `roost up` of this release taking over from one that knows no reload
(0.1.0's): the one-host upgrade, make-before-break (issue 20).

Theory of operation. 0.1.0's `roost up` dies of SIGHUP with its apps, and
its runner kills its instances when it stops (they die with it: their
parent-death signal), so no daemon of it can hand anything over. What can
be done is what a cluster upgrade does with a drain: start this release's
runner beside the old one, let the apps' instances start there and be
routed, and only then stop the old runner. Step by step (`supervise` in
`roost.cli.up` calls these around its own start of each role):

- the old `roost up` is sent SIGSTOP: it restarts none of the daemons taken
  from it; they keep running, and what they write on the pipes it reads
  (their stderr) is read here instead, so none of them blocks on a full pipe;
- the new runner gets a host id of its own (DATA/runner/host_id rewritten
  before the address book and identities are made): the new controller
  hears only it, so every instance the state places on the old host is
  placed again on the new one, started and routed there;
- the router's sockets join the old router's SO_REUSEPORT group on each
  port and take every new connection of it (a socket it bound without
  SO_REUSEPORT is given the option first, through a duplicate taken with
  pidfd_getfd(2): `open_to_join`), so the old router, still serving what it
  has, is sent no new connection: 0.1.0's closes one it accepted but has
  not read a request from when it stops, and none is left to cut;
- the controller, builder, gateway, servicehost and backupd are each sent
  TERM and replaced once gone (0.1.0's servicehost stops PostgreSQL and
  Redis with it: those restart); the runner and the router are replaced
  with overlap: the new router once every instance serves on the new host,
  then the old router (it finishes what it has in flight), then the old
  runner, which stops instances nobody routes to any more;
- at the end the old `roost up`, whose daemons are all gone, is sent
  SIGKILL (stopped all along, it has nothing left to stop; a TERM would
  make it write its last status over this one's), and this one takes the
  data directory's lock.

A `roost up` is older than this one when it holds DATA's lock, has run for
a while (a current one writes DATA/up.json at once) and DATA/up.json is not
its or names no release (`is_older`).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from roost import __version__
from roost.cli import reload
from roost.cli.local import AlreadyRunning, lock_data_dir
from roost.cli.readiness import local_api
from roost.proc import activation, upstate
from roost.proc.supervise import Program, Supervisor

# pidfd_getfd(2): 438 on every architecture (the unified syscall table, Linux 5.6).
SYS_PIDFD_GETFD = 438
# A current `roost up` writes DATA/up.json well within this.
OLDER_AFTER_S = 10.0
# How long the apps' instances may take to start and be routed on the new runner.
MOVE_TIMEOUT_S = 180.0
GONE_TIMEOUT_S = 90.0
POLL_S = 0.2


def kind_of(status: upstate.UpStatus | None, pid: int, age_s: float, mine: str) -> str:
    """How the `roost up` `pid` holding the lock is taken over (pure): ""
    when it is not (this release's, or just started: a current one writes
    DATA/up.json within `OLDER_AFTER_S`); "restart" when it knows no
    reload (DATA/up.json is not its or names no release: 0.1.0 wrote none);
    "hand-over" when it is of another release (`status.release` is not
    `mine`), whose daemons hand their tenants over as a reload's do."""
    if status is not None and status.pid == pid and status.release:
        # Its own status says its release, however young it is: a roost up
        # taken over seconds after it started (its apps already deployed)
        # was refused as "already running" while younger than OLDER_AFTER_S.
        return "hand-over" if status.release != mine else ""
    if age_s < OLDER_AFTER_S:
        return ""
    return "restart"


def role_of(cmdline: list[str]) -> str:
    """The role a `... roost --data DATA ROLE ...` command line runs ("" if none; pure)."""
    if "--data" in cmdline:
        i = cmdline.index("--data") + 2
        return cmdline[i] if i < len(cmdline) else ""
    return ""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _age_s(pid: int) -> float:
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def gone(pid: int) -> bool:
    """Exited (a zombie its stopped parent cannot reap counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def steal_fd(pid: int, fd: int) -> int:
    """A duplicate, in this process, of process `pid`'s descriptor `fd`."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd of pid {pid}'s fd {fd}: {os.strerror(err)}")
        return int(got)
    finally:
        os.close(pidfd)


def _fds(pid: int) -> dict[str, int]:
    """Process `pid`'s descriptors by what they are ("socket:[N]", "pipe:[N]")."""
    out: dict[str, int] = {}
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        try:
            out.setdefault(os.readlink(entry), int(entry.name))
        except OSError:
            pass
    return out


def holder_of(link: str) -> tuple[int, int] | None:
    """(pid, fd) of a process holding the descriptor /proc names `link`
    ("socket:[INODE]"), None if none of those this process may see does."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with _quiet():
                for name, fd in _fds(int(proc.name)).items():
                    if name == link:
                        return int(proc.name), fd
    return None


def open_to_join(host: str, port: int) -> int:
    """Make every socket listening on host:port joinable by a socket of
    ours (`activation.listen(join=True)`), however its holder bound it: a
    socket bound without SO_REUSEPORT (0.1.0's router with one worker) is
    taken from its holder for a moment and given SO_REUSEPORT, which a
    listening socket takes late (the group forms when the next socket
    listens). Returns how many there are."""
    table = Path("/proc/net/tcp6" if ":" in host else "/proc/net/tcp").read_text()
    links = activation.listening_inodes(table, host, port)
    for link in links:
        held = holder_of(link)
        if held is not None:
            with socket.socket(fileno=steal_fd(*held)) as theirs:
                theirs.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if links:
        # What waits in their backlogs when they close moves to ours.
        activation.allow_migration()
    return len(links)


def older_up(data: Path, running: int | None) -> tuple[int, str] | None:
    """(pid, `kind_of`) of the `roost up` of another release on `data`, None
    when none runs or the one running is this release's."""
    if running is None or gone(running):
        return None
    loaded = upstate.load(data)
    status = loaded[0] if loaded is not None else None
    kind = kind_of(status, running, _age_s(running), __version__)
    return (running, kind) if kind else None


def new_host_id(data: Path) -> tuple[str, str]:
    """(the old runner's host id, the new one's), DATA/runner/host_id now the new one."""
    path = data / "runner" / "host_id"
    old = path.read_text().strip() if path.exists() else ""
    new = f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new + "\n")
    os.replace(tmp, path)
    return old, new


@dataclass(frozen=True)
class TakeOver:
    """What `roost up` needs to take over: the older one's pid, the
    runners' host ids (old, new: the same when its daemons hand over) and
    whether they hand their tenants over (`kind_of`'s "hand-over")."""

    pid: int
    hosts: tuple[str, str]
    hands_over: bool = False


class Older:
    """The older `roost up` being taken over (see the module docstring)."""

    def __init__(
        self, pid: int, data: Path, say: Callable[[str], None], hands_over: bool = False
    ) -> None:
        self.pid = pid
        self.data = data
        self.say = say
        self.hands_over = hands_over
        self.draining: list[int] = []  # daemons told to go that may finish meanwhile
        self.ended = False
        self.lock: IO[str] | None = None  # DATA's, once it has let go of it
        self.roles: dict[str, int] = {}
        self.sockets: list[tuple[str, socket.socket]] = []
        self._relayed: list[int] = []

    def freeze(self) -> None:
        """SIGSTOP it, note its daemons, and read their stderr from now on."""
        os.kill(self.pid, signal.SIGSTOP)
        for child in _children(self.pid):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_text().split("\0")
            except OSError:
                continue
            if role := role_of(cmdline):
                self.roles[role] = child
        # A release that forks its roles from a zygote names their pids in
        # its status (their command lines are the zygote's).
        loaded = upstate.load(self.data)
        if loaded is not None and loaded[0].pid == self.pid:
            for role, state in loaded[0].roles.items():
                if state.pid and role not in self.roles and not gone(state.pid):
                    self.roles[role] = state.pid
        self.say(f"took over roost up (pid {self.pid}): its daemons {self.roles}")
        pipes = _fds(self.pid)
        loop = asyncio.get_running_loop()
        for child in self.roles.values():
            with _quiet():
                fd = steal_fd(self.pid, pipes[os.readlink(f"/proc/{child}/fd/2")])
                os.set_blocking(fd, False)
                loop.add_reader(fd, self._relay, fd)
                self._relayed.append(fd)

    def _relay(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
        else:
            asyncio.get_running_loop().remove_reader(fd)

    def listeners(self, host: str, ports: list[tuple[str, int]]) -> list[tuple[str, socket.socket]]:
        """The router's listening sockets, each joining the group of the old
        router's socket on its port and taking its new connections (see
        `open_to_join`): it gets none from then on, so none is cut as it
        stops (it would close a connection it had accepted but not read)."""
        for _, port in ports:
            open_to_join(host, port)
        self.sockets = [(name, activation.listen(host, port, join=True)) for name, port in ports]
        return self.sockets

    def held_listeners(
        self, host: str, ports: list[tuple[str, int]]
    ) -> list[tuple[str, socket.socket]]:
        """The older `roost up`'s own listening sockets for the router (a
        release that hands over binds them once and gives them to every
        router it starts): this one's routers serve on the very same
        sockets, so a connection waiting in their backlog is accepted by
        whichever router is there."""
        fds = _fds(self.pid)
        table = Path("/proc/net/tcp6" if ":" in host else "/proc/net/tcp").read_text()
        for name, port in ports:
            held = [
                fds[link] for link in activation.listening_inodes(table, host, port) if link in fds
            ]
            if not held:
                raise OSError(
                    f"roost up (pid {self.pid}) holds no socket listening on {host}:{port}"
                )
            self.sockets.append((name, socket.socket(fileno=steal_fd(self.pid, held[0]))))
        return self.sockets

    async def retire(self, role: str, sig: int = signal.SIGTERM, wait: bool = True) -> None:
        """Send the old `role` daemon `sig` (TERM: stop; USR2: hand over) and
        return once it has gone, or at once when not `wait` (`end` waits)."""
        pid = self.roles.pop(role, 0)
        if not pid or gone(pid):
            return
        # Several roles in one process (roost.cli.rolehost): it goes as a
        # whole, handing over (its runner and servicehost leave their tenants).
        shared = [r for r, p in self.roles.items() if p == pid]
        if shared:
            for r in shared:
                del self.roles[r]
            role, sig = "+".join([role, *shared]), signal.SIGUSR2
        self.say(f"{'stopping' if sig == signal.SIGTERM else 'handing over from'} "
                 f"the older {role} (pid {pid})")  # fmt: skip
        os.kill(pid, sig)
        if wait:
            await _gone(pid)
        else:
            self.draining.append(pid)

    async def end(self) -> None:
        """End the old `roost up`, its daemons gone, and what is left below
        it; then take the data directory's lock."""
        for fd in self._relayed:
            with _quiet():
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        self._relayed = []
        for role in list(self.roles):
            await self.retire(role)
        for pid in self.draining:
            await _gone(pid)
        # Below a roost up that hands over are its daemons' tenants (as its
        # subreaper, it adopted the instances' shims, PostgreSQL, Redis):
        # they stay, for this one's daemons have adopted them.
        left = [] if self.hands_over else [p for p in _descendants(self.pid) if not gone(p)]
        # SIGKILL, not TERM: stopped since the start, it has nothing left to
        # stop, and on its way out it would write its own last status over
        # this roost up's (`roost status --wait` would read "stopped").
        os.kill(self.pid, signal.SIGKILL)
        for pid in left:  # (orphans it adopted as subreaper, none expected)
            with _quiet():
                os.kill(pid, signal.SIGKILL)
        # Its lock goes once its last thread has exited, which may be a
        # moment after its main thread shows as a zombie.
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while self.lock is None:
            try:
                self.lock = lock_data_dir(self.data)
            except AlreadyRunning:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(POLL_S)
        self.ended = True
        self.say(f"the older roost up (pid {self.pid}) has ended")

    def resume(self) -> None:
        """A take-over cut short: the old `roost up` carries on (it restarts what it lost)."""
        with _quiet():
            os.kill(self.pid, signal.SIGCONT)


async def _gone(pid: int) -> None:
    """Once `pid` has exited; SIGKILL after `GONE_TIMEOUT_S`."""
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while not gone(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(POLL_S)


class _quiet:
    """Suppress OSError and KeyError: a process or descriptor gone meanwhile."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, OSError | KeyError)


async def moved(data: Path, old_host: str, new_host: str, say: Callable[[str], None]) -> None:
    """Until every app's instances run on `new_host` and none on `old_host`
    (or `MOVE_TIMEOUT_S` passed: then say what has not moved)."""
    # Here, not at the top: `roost up` imports this module at every start and
    # keeps what it imports; this runs only in a take-over.
    import httpx

    deadline = time.monotonic() + MOVE_TIMEOUT_S
    left: list[str] = ["(the controller's answer)"]
    while time.monotonic() < deadline:
        try:
            url, verify, headers = await asyncio.to_thread(local_api, data)
            async with httpx.AsyncClient(verify=verify, headers=headers, timeout=5.0) as http:
                apps = (await http.get(f"{url}/api/apps")).raise_for_status().json()
                left = []
                for app in apps:
                    rows = (await http.get(f"{url}/api/apps/{app['name']}/ps")).json()
                    left += [
                        f"{app['name']} {r['instance_id']} ({r['state']} on {r['host_id']})"
                        for r in rows
                        if r["host_id"] == old_host or r["state"] != "up"
                    ]
            if not left:
                return
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pass
        await asyncio.sleep(POLL_S)
    say(f"instances not moved to the new runner in {MOVE_TIMEOUT_S:g}s: {', '.join(left)}")


async def bring_up(
    sup: Supervisor,
    programs: list[Program],
    older: Older,
    data: Path,
    hosts: tuple[str, str],
    ready_timeout: Callable[[str], float],
) -> bool:
    """Start `programs` (every role but the controller, in `roost up`'s
    order) in place of the older `roost up`'s daemons (see the module
    docstring); False when one did not come up (the take-over stops there)."""
    for program in programs:
        role = program.name
        if role not in ("runner", "router"):
            await older.retire(role)
        sup.add(program)
        if not await sup.wait_up(role, ready_timeout(role)):
            older.say(f"the take-over stopped: the new {role} did not come up")
            return False
        if role == "runner":
            await moved(data, *hosts, older.say)
        elif role == "router":
            await older.retire("router")  # it finishes what it has in flight
            for _, sock in older.sockets:  # its sockets gone: no steering needed any more
                activation.unsteer(sock)
            await older.retire("runner")  # its instances: no router sends them anything
    await older.end()
    return True


async def hand_over(
    sup: Supervisor,
    programs: list[Program],
    older: Older,
    ready_timeout: Callable[[str], float],
) -> bool:
    """Start `programs` (every role but the controller, in `roost up`'s
    order) in place of the daemons of an older `roost up` that hand over,
    as a reload replaces its own (`roost.cli.reload.plan`: the runner and the
    servicehost leave their tenants running for this one's to adopt; the
    router drains while this one's serves on the same sockets); False when
    one did not come up (the take-over stops there)."""
    steps = {s.role: s for s in reload.plan([p.name for p in programs], shared_sockets=True)}
    for program in programs:
        step = steps[program.name]
        await older.retire(step.role, step.signal, wait=not step.overlap)
        sup.add(program)
        if not await sup.wait_up(step.role, ready_timeout(step.role)):
            older.say(f"the take-over stopped: the new {step.role} did not come up")
            return False
    await older.end()
    return True
