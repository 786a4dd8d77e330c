"""Run a block of a test, and every process it starts, in a network namespace of its own.

A platform started with its tenant firewall on (tests/security) writes the
rules of its namespace: every tenant uid may reach only its own apps'
services on a platform address. Tenant uids are `base + app id`, so another
platform that a second test worker runs at the same time has tenants with
the same uids, whose connections to their own PostgreSQL that firewall
would refuse (and two such platforms would replace each other's table). In
a namespace of its own the firewall, the loopback addresses and the ports
are the block's alone.

Only this thread moves (setns), and the processes it forks inherit it; at
the end the thread returns and the namespace is deleted. The builder still
fetches packages from PyPI: a veth pair of addresses made here joins the
namespace to an HTTP CONNECT proxy that a thread of the root namespace runs
(`Outside.env`: HTTPS_PROXY for uv, loopback exempt).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# Only TLS to a named host goes out: what uv fetches.
_PROXY_PORTS = (443,)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Outside:
    proxy: str  # http://ADDRESS:PORT, reachable from inside the namespace

    @property
    def env(self) -> dict[str, str]:
        here = "127.0.0.1,localhost,::1,.localhost"
        return {"HTTPS_PROXY": self.proxy, "https_proxy": self.proxy, "NO_PROXY": here,
                "no_proxy": here}  # fmt: skip


def _pump(a: socket.socket, b: socket.socket) -> None:
    # Either side going away (a reset, a broken pipe) ends the tunnel, as an
    # end of file does: not an exception in the proxy's thread.
    with a, b, contextlib.suppress(OSError):
        while True:
            ready, _, _ = select.select([a, b], [], [], 60)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)


def _serve_one(conn: socket.socket) -> None:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        chunk = conn.recv(4096)
        if not chunk:
            conn.close()
            return
        head += chunk
    method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    host, _, port = target.rpartition(":")
    if method != "CONNECT" or not port.isdigit() or int(port) not in _PROXY_PORTS:
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        conn.close()
        return
    try:
        up = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
    except OSError:
        conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        conn.close()
        return
    up.settimeout(None)
    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    _pump(conn, up)


def _serve(listener: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def _veth(name: str) -> int:
    """A veth pair into `name` (its end there is eth0) on the first free
    10.79.N.0/30 (N also names the root end, so two runs cannot share one)."""
    for n in range(1 + os.getpid() % 250, 1 + os.getpid() % 250 + 250):
        n = (n - 1) % 250 + 1
        veth = f"vsec{n}"
        made = subprocess.run(
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name],
            capture_output=True,
        )
        if made.returncode == 0:
            return n
    raise RuntimeError("no free 10.79.N.0/30 for a test namespace")


@contextmanager
def own_network_namespace(name: str) -> Iterator[Outside]:
    _ip("netns", "add", name)
    stop = threading.Event()
    listener = socket.socket()
    veth = ""
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        subnet = _veth(name)
        outer, inner, veth = f"10.79.{subnet}.1", f"10.79.{subnet}.2", f"vsec{subnet}"
        _ip("addr", "add", f"{outer}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", name, "addr", "add", f"{inner}/30", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        listener.bind((outer, 0))
        listener.listen(64)
        threading.Thread(target=_serve, args=(listener, stop), daemon=True).start()
        port = listener.getsockname()[1]
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(there)
            try:
                yield Outside(f"http://{outer}:{port}")
            finally:
                _setns(home)
        finally:
            os.close(there)
            os.close(home)
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        subprocess.run(["ip", "netns", "del", name], check=False)  # its veth end goes too
        if veth:
            subprocess.run(["ip", "link", "del", veth], check=False, capture_output=True)
