"""A router host's listening socket, held across router replacements (what a
systemd .socket unit or `roost up` does for a real host).

    python -m tests.cluster.routerkeeper ADDRESS PORT PIDFILE -- ROUTER-ARGV...

Binds ADDRESS:PORT once and runs the router on it by socket activation
(roost.proc.activation), writing the router's pid to PIDFILE. SIGHUP: a
new router (from whatever code its PYTHONPATH names now) starts on the same
socket and the old one is sent TERM at once; it stops accepting and drains
while connections wait in the shared backlog. SIGTERM: the router is sent
TERM, and the keeper exits once it has.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from roost.proc import activation


def main(argv: list[str]) -> None:
    address, port, pidfile = argv[0], int(argv[1]), Path(argv[2])
    router = argv[argv.index("--") + 1 :]
    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(activation.BACKLOG)
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
