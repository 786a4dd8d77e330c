"""A router host's listening socket, held across router replacements (what a
systemd .socket unit or `roost up` does for a real host).

    python -m tests.cluster.routerkeeper ADDRESS PORT PIDFILE [--reuse-port] -- ROUTER-ARGV...

Binds ADDRESS:PORT once and runs the router on it by socket activation
(roost.proc.activation), writing the router's pid to PIDFILE. SIGHUP: a
new router (from whatever code its PYTHONPATH names now) starts on the same
socket and the old one is sent TERM at once; it stops accepting and drains
while connections wait in the shared backlog. SIGTERM: the router is sent
TERM, and the keeper exits once it has.

--reuse-port: the socket joins the SO_REUSEPORT group of a router that
bound the port itself (0.1.0's, with several workers), so the keeper's
router takes over from it (tests/cluster/upgrade_hosts.py), and steers
every new connection of the group to itself (`steer_here`): the old
router gets none from then on, only the connections it holds already.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

from roost.proc import activation

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
BPF_RET_K = 0x06


def listeners(port: int) -> int:
    """TCP sockets listening on `port` in this network namespace (IPv4)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1 for r in rows if (f := r.split())[3] == "0A" and int(f[1].split(":")[1], 16) == port
    )


def steer_here(sock: socket.socket, index: int) -> None:
    """Attach to `sock`'s SO_REUSEPORT group a classic BPF program that
    picks the socket at `index` of the group for every new connection:
    `sock`'s own (a socket joins at the end). Once the others close, the
    index is out of range and the kernel picks by hash, from `sock` alone."""
    insn = ctypes.create_string_buffer(struct.pack("HBBI", BPF_RET_K, 0, 0, index))
    prog = struct.pack("H6xQ", 1, ctypes.addressof(insn))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog)


def main(argv: list[str]) -> None:
    address, port, pidfile = argv[0], int(argv[1]), Path(argv[2])
    router = argv[argv.index("--") + 1 :]
    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    joining = "--reuse-port" in argv[: argv.index("--")]
    before = listeners(port)
    if joining:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((address, port))
    sock.listen(activation.BACKLOG)
    if joining:
        steer_here(sock, before)
    fd = sock.fileno()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(activation.launcher([("http", fd)], router), pass_fds=[fd])
        tmp = pidfile.with_suffix(".tmp")
        tmp.write_text(f"{proc.pid}\n")
        os.replace(tmp, pidfile)
        return proc

    current = [start()]
    retiring: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    replace = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: replace.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        if replace.is_set():
            replace.clear()
            old = current[0]
            current[0] = start()
            old.terminate()
            retiring.append(old)
        retiring = [p for p in retiring if p.poll() is None]
        stop.wait(0.1)
    for p in [current[0], *retiring]:
        p.terminate()
    for p in [current[0], *retiring]:
        p.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
