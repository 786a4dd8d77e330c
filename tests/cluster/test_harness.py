"""The namespace harness itself: addresses, partitions both ways, kills, teardown."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.cluster.harness import Network, ns_pids
from tests.conftest import wait_until

pytestmark = pytest.mark.cluster

SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], 9000)); s.listen()\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(socket.gethostname().encode()); c.close()\n"
)
CLIENT = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], 9000), timeout=float(sys.argv[2]))\n"
    "print(s.recv(100).decode())\n"
)


def _ask_from_root(addr: str, timeout: float = 1.0) -> str | None:
    try:
        with socket.create_connection((addr, 9000), timeout=timeout) as s:
            return s.recv(100).decode()
    except OSError:
        return None


def _ask_from(net: Network, host: object, addr: str, timeout: float = 1.0) -> str | None:
    r = net.run_in(host, [sys.executable, "-c", CLIENT, addr, str(timeout)])  # type: ignore[arg-type]
    return r.stdout.strip() if r.returncode == 0 else None


def test_hosts_have_their_own_address_and_name(network: Network) -> None:
    a, b = network.add_host("alpha"), network.add_host("beta")
    for h in (a, b):
        network.spawn(h, [sys.executable, "-c", SERVER, h.ip], {}, h.data.parent / "srv.log")
    # Each server listens when its interpreter has started: under load beta's
    # may come well after alpha's (seen in a four-worker run).
    wait_until(lambda: _ask_from_root(a.ip) == "alpha", 30, "alpha's server")
    wait_until(lambda: _ask_from_root(b.ip) == "beta", 30, "beta's server")
    assert _ask_from(network, a, b.ip) == "beta"
    # Only the host's own address is local to it: alpha cannot bind beta's.
    r = network.run_in(
        a, [sys.executable, "-c", f"import socket; socket.socket().bind(('{b.ip}', 0))"]
    )
    assert r.returncode != 0 and "Cannot assign requested address" in r.stderr


def test_partition_drops_both_ways_and_heal_restores(network: Network) -> None:
    a, b = network.add_host("alpha"), network.add_host("beta")
    for h in (a, b):
        network.spawn(h, [sys.executable, "-c", SERVER, h.ip], {}, h.data.parent / "srv.log")
    wait_until(lambda: _ask_from_root(b.ip) == "beta", 10, "beta's server")
    wait_until(lambda: _ask_from_root(a.ip) == "alpha", 10, "alpha's server")
    pids = ns_pids(b.ns)
    network.partition(b)
    assert _ask_from_root(b.ip) is None  # into the partitioned host
    assert _ask_from(network, a, b.ip) is None  # from another host
    assert _ask_from(network, b, a.ip) is None  # out of it
    assert ns_pids(b.ns) == pids  # nothing was killed
    network.heal(b)
    assert _ask_from_root(b.ip) == "beta"
    assert _ask_from(network, b, a.ip) == "alpha"


def test_kill_host_kills_every_process_in_it(network: Network) -> None:
    a, b = network.add_host("alpha"), network.add_host("beta")
    # A process tree, as a daemon with children would be.
    tree = (
        "import subprocess, sys; "
        f"subprocess.Popen([sys.executable, '-c', {SERVER!r}, '{a.ip}']).wait()"
    )
    network.spawn(a, [sys.executable, "-c", tree], {}, a.data.parent / "tree.log")
    network.spawn(b, [sys.executable, "-c", SERVER, b.ip], {}, b.data.parent / "srv.log")
    wait_until(lambda: len(ns_pids(a.ns)) == 2 and _ask_from_root(a.ip), 10, "the tree")
    network.kill_host(a)
    assert ns_pids(a.ns) == []
    assert _ask_from_root(a.ip) is None
    assert _ask_from_root(b.ip) == "beta"  # other hosts are untouched


def test_teardown_removes_everything_even_with_processes_running(netns_ok: None) -> None:
    base = Path(tempfile.mkdtemp(prefix="roost-net-"))
    net = Network(base)
    try:
        net.create()
        h = net.add_host("alpha")
        net.spawn(h, ["sleep", "300"], {}, h.data.parent / "sleep.log")
        net.partition(h)
    finally:
        net.close()
        shutil.rmtree(base, ignore_errors=True)
    assert net.leftovers() == []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert h.ns not in listed
