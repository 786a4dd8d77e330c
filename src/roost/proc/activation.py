"""Socket activation, systemd's protocol: listening sockets a process is
handed instead of binding them itself, so that they outlive it.

The parent (a systemd .socket unit, or `roost up`) binds and listens, then
starts the child with the sockets at file descriptors 3, 4, ... and three
variables: LISTEN_FDS (how many), LISTEN_PID (the child's own pid: the
variables, inherited further by a grandchild, are not meant for it) and
LISTEN_FDNAMES (their names, colon-separated). The child takes them once at
start (`take`) and unsets them.

While no process accepts on a socket (a successor starting, a predecessor
gone), connections wait in its kernel backlog: the binder chooses its size
and should make it large (`BACKLOG`; the kernel caps it at
net.core.somaxconn). A parent written in Python cannot put the sockets at 3,
4, ... between fork and exec, nor know the pid before, so `launcher` wraps
the child's command in a short stub that does both, then execs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from roost.proc.exits import ConfigError

FIRST_FD = 3
BACKLOG = 4096
VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
SO_DETACH_REUSEPORT_BPF = 68
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return a constant
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def parse(env: Mapping[str, str], pid: int) -> list[tuple[str, int]]:
    """(name, fd) of each socket the environment hands to process `pid`
    (pure). None unless LISTEN_PID names `pid`; names are "unknown" when
    LISTEN_FDNAMES is absent, as systemd names them."""
    count = env.get("LISTEN_FDS", "")
    if not count or env.get("LISTEN_PID", "") != str(pid):
        return []
    try:
        n = int(count)
    except ValueError:
        raise ConfigError(f"LISTEN_FDS={count!r} is not a number of sockets") from None
    if n < 0:
        raise ConfigError(f"LISTEN_FDS={count!r} is not a number of sockets")
    given = env.get("LISTEN_FDNAMES")
    names = given.split(":") if given is not None else ["unknown"] * n
    if len(names) != n:
        raise ConfigError(f"LISTEN_FDNAMES={given!r} names {len(names)} sockets, LISTEN_FDS {n}")
    return [(name, FIRST_FD + i) for i, name in enumerate(names)]


def take(environ: MutableMapping[str, str] | None = None) -> list[tuple[str, int]]:
    """The sockets handed to this process, read once: the variables are
    unset and the descriptors made close-on-exec, so no child of ours
    inherits them unless it is given them on purpose."""
    env = os.environ if environ is None else environ
    try:
        got = parse(env, os.getpid())
    finally:
        for var in VARIABLES:
            env.pop(var, None)
    for _, fd in got:
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise ConfigError(f"inherited fd {fd} is not open: {exc.strerror}") from None
    return got


def listening_tcp(fd: int, name: str) -> socket.socket:
    """The listening TCP socket at `fd`; ConfigError if it is anything else
    (a file, a socket that does not listen, a UDP or unix socket)."""
    what = f"inherited fd {fd} ({name!r})"
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"{what} is not a socket: {exc.strerror}") from None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        sock.detach()  # (not ours to close)
        raise ConfigError(f"{what} is not a TCP socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ConfigError(f"{what} is a TCP socket that does not listen (bind and listen first)")
    return sock


# The stub `launcher` runs: copies the sockets above the target range, then
# onto 3, 4, ... (dup2 leaves them inheritable), sets the variables with its
# own pid, which exec keeps, and execs the command.
_STUB = """\
import fcntl, os, sys
names, n = sys.argv[1], int(sys.argv[2])
fds = [int(a) for a in sys.argv[3:3 + n]]
tmp = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3 + n) for fd in fds]
for fd in fds:
    if fd >= 3 + n:
        os.close(fd)
for i, fd in enumerate(tmp):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ.update(LISTEN_FDS=str(n), LISTEN_FDNAMES=names, LISTEN_PID=str(os.getpid()))
os.execvp(sys.argv[3 + n], sys.argv[3 + n:])
"""


def launcher(sockets: Sequence[tuple[str, int]], argv: Sequence[str]) -> list[str]:
    """The command that runs `argv` with `sockets` (name, our fd) handed to
    it by the protocol. Start it with those fds passed (`pass_fds`)."""
    names = ":".join(name for name, _ in sockets)
    fds = [str(fd) for _, fd in sockets]
    return [sys.executable, "-I", "-S", "-c", _STUB, names, str(len(fds)), *fds, *argv]


def proc_address(ip: str) -> str:
    """`ip` as /proc/net/tcp{,6} print it: each 32-bit word of the address
    in network order read as a little-endian integer, in hex (pure)."""
    raw = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    return "".join(f"{w:08X}" for w in struct.unpack(f"<{len(raw) // 4}I", raw))


def listeners(proc_net_tcp: str, ip: str, port: int) -> int:
    """TCP sockets listening on ip:port in a /proc/net/tcp (or tcp6) text:
    the members of that address's SO_REUSEPORT group (pure)."""
    want = f"{proc_address(ip)}:{port:04X}"
    return sum(1 for r in proc_net_tcp.splitlines()[1:] if r.split()[1:4:2] == [want, "0A"])


def listening_inodes(proc_net_tcp: str, ip: str, port: int) -> set[str]:
    """The sockets listening on ip:port in a /proc/net/tcp (or tcp6) text, as
    a process's /proc/PID/fd links name them: "socket:[INODE]" (pure)."""
    want = f"{proc_address(ip)}:{port:04X}"
    rows = (r.split() for r in proc_net_tcp.splitlines()[1:])
    return {f"socket:[{f[9]}]" for f in rows if f[1:4:2] == [want, "0A"]}


def steer_here(sock: socket.socket, index: int) -> None:
    """Attach to `sock`'s SO_REUSEPORT group a one-instruction classic BPF
    program that picks the group's socket at `index` for every new
    connection. A socket joins a group at its end, so the number of
    listeners before it joined is its own index. Once the others close the
    index is out of range and the kernel picks by hash, from `sock` alone."""
    insn = ctypes.create_string_buffer(struct.pack("HBBI", _BPF_RET_K, 0, 0, index))
    prog = struct.pack("H6xQ", 1, ctypes.addressof(insn))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog)


def unsteer(sock: socket.socket) -> None:
    """Detach the group's steering program: once the sockets it steered away
    from are gone, a socket that joins later gets its share again."""
    with contextlib.suppress(OSError):  # (none attached)
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)


def allow_migration() -> bool:
    """net.ipv4.tcp_migrate_req on (Linux 5.14+): connections waiting in a
    closing SO_REUSEPORT listener's backlog move to another of its group
    instead of being reset. False where it cannot be set (an older kernel,
    no privilege)."""
    try:
        if MIGRATE_REQ.read_text().strip() != "1":
            MIGRATE_REQ.write_text("1\n")
        return True
    except OSError:
        return False


def listen(host: str, port: int, *, join: bool = False) -> socket.socket:
    """A TCP socket listening on host:port with `BACKLOG`, to hand over.

    `join`: take the port over from a process that bound it itself with
    SO_REUSEPORT (a router of 0.1.0, or one started without activation and
    several workers): the socket joins that group and steers every new
    connection to itself (`steer_here`), so the other process gets none from
    then on and can be stopped once ours serves. OSError as bind raises it
    (EADDRINUSE when the holder did not set SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if join:
            table = Path("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp")
            before = listeners(table.read_text(), host, port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        if join:
            steer_here(sock, before)
    except OSError:
        sock.close()
        raise
    return sock
