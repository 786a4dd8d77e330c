"""Network namespaces for the firewall tests (runner's and builder's tables, for
real): every table is applied with `ip netns exec NS nft`, every connection
made inside a namespace, to addresses the test gave it. A tenant is a process
that drops to an app's uid before it connects; root plays the router."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

IP = shutil.which("ip") or "/usr/sbin/ip"


APP7 = 1_900_000_007  # app 7's instances


APP8 = 1_900_000_008  # another app


BUILD7 = 2_000_000_007  # app 7's build steps


_ids = itertools.count()


LISTEN = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for spec in sys.argv[1:]:
    host, _, port = spec.rpartition(":")
    host = host.strip("[]")
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if ":" in host:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, int(port)))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(b"!")
        conn.close()
"""


CONNECT = """
import os, socket, sys
uid, host, port, source = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
if uid:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.settimeout(3)
if source:
    s.bind((source, 0))
try:
    s.connect((host, port))
    print("ok" if s.recv(1) == b"!" else "no greeting")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
except OSError as exc:
    print(f"error {exc.errno}")
"""


class Lab:
    """Network namespaces and the processes in them; all gone at close()."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def netns(self) -> str:
        name = f"roostfw-{os.getpid()}-{next(_ids)}"
        subprocess.run([IP, "netns", "add", name], check=True)
        self.names.append(name)
        subprocess.run([IP, "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    def link(self, a: str, b: str, a_addrs: list[str], b_addrs: list[str]) -> None:
        subprocess.run(
            [
                IP,
                "link",
                "add",
                "fw0",
                "netns",
                a,
                "type",
                "veth",
                "peer",
                "name",
                "fw1",
                "netns",
                b,
            ],
            check=True,
        )
        for ns, dev, addrs in ((a, "fw0", a_addrs), (b, "fw1", b_addrs)):
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                subprocess.run([IP, "-n", ns, "addr", "add", addr, "dev", dev, *extra], check=True)
            subprocess.run([IP, "-n", ns, "link", "set", dev, "up"], check=True)

    def listen(self, ns: str, *specs: str) -> None:
        """Root listeners on HOST:PORT each; every accepted connection gets "!"."""
        proc = subprocess.Popen(
            [IP, "netns", "exec", ns, sys.executable, "-c", LISTEN, *specs],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for name in self.names:
            subprocess.run([IP, "netns", "del", name], check=False)


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def nft_in(ns: str) -> list[str]:
    return [IP, "netns", "exec", ns, "nft"]


async def attempt(ns: str, uid: int, host: str, port: int, source: str = "") -> str:
    """Connect from `ns` as `uid` (0: root): "ok", "refused", "timeout"..."""
    proc = await asyncio.create_subprocess_exec(
        IP, "netns", "exec", ns, sys.executable, "-c", CONNECT, str(uid), host, str(port), source,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode().strip()


async def outcomes(ns: str, tries: list[tuple[int, str, int]]) -> list[str]:
    return [await attempt(ns, uid, host, port) for uid, host, port in tries]
