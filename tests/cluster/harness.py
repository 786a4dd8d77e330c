"""Hosts as Linux network namespaces, for the multi-host tests and the failover bench.

Theory of operation. One bridge in the root namespace (`rb<tag>`, address
10.77.N.1/24) plays the switch; every host is a network namespace with a veth
pair: `eth0` (10.77.N.K/24) inside, the other end (`rv<tag>K`) enslaved to the
bridge. Processes start with `ip netns exec NS unshare --uts ...` and see only
that host's interfaces (and its own hostname, the host's name), so daemons
bind (and `own_endpoints` picks) the host's own address.
The root namespace also owns 10.77.N.1: the tests, PostgreSQL and anything
that needs the internet (the builder fetches packages from PyPI) live there.

- `kill_host` SIGKILLs every process whose network namespace is the host's
  (`ip netns pids`): the daemons and whatever they started.
- `partition` adds the host's bridge port to an nftables (bridge family) set
  whose rules silently drop IP frames from and to it: nothing crosses in
  either direction, as when a switch port dies, yet every process keeps
  running and every socket stays open; `heal` removes it from the set.
- Names carry a per-session tag (and the subnet is one no other session uses,
  chosen under a lock), so parallel runs cannot collide; each session records
  its pid, and a later session removes what a crashed one left behind.

Needs root, iproute2 (`ip`) and nftables (`nft`); `skip_reason()` says why
not when not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from roost.datadir import seaweed

STATE_DIR = Path("/run/roost-netns")
SUBNET_PREFIX = "10.77"


def skip_reason() -> str | None:
    """Why namespace tests cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces as hosts need root (CI runs these tests as root)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {package})"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns` does not work here: {r.stderr.strip()}"
    return None


def _tool(name: str) -> str:
    """Absolute path: a spawned process's environment may have no PATH."""
    return shutil.which(name) or name


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def nft(script: str) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nft: {r.stderr.strip()}\n{script}")


def _partition_table(name: str) -> str:
    """An nftables bridge-family table dropping IP on the ports in set `parted`.

    IP only: ARP keeps flowing, so a heal is not slowed by neighbour entries
    that went stale meanwhile (a test-network artefact, not Roost's doing).
    """
    return f"""
table bridge {name} {{
    set parted {{ type ifname; }}
    chain forward {{
        type filter hook forward priority -200; policy accept;
        iifname @parted ether type {{ ip, ip6 }} drop
        oifname @parted ether type {{ ip, ip6 }} drop
    }}
    chain input {{
        type filter hook input priority -200; policy accept;
        iifname @parted ether type {{ ip, ip6 }} drop
    }}
    chain output {{
        type filter hook output priority -200; policy accept;
        oifname @parted ether type {{ ip, ip6 }} drop
    }}
}}
"""


def ns_pids(ns: str) -> list[int]:
    r = ip("netns", "pids", ns, check=False)
    return [int(x) for x in r.stdout.split()] if r.returncode == 0 else []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Host:
    name: str  # short name, e.g. "runner1"
    ns: str  # network namespace
    ip: str
    veth: str  # bridge-side end, in the root namespace
    data: Path  # the host's Roost data directory
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    partitioned: bool = False


class Network:
    """A bridge and the namespaces on it; `close()` removes all of it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.tag = f"{os.getpid() % 0x10000:04x}{secrets.token_hex(1)}"
        self.bridge = f"rb{self.tag}"
        self.nft_table = f"roost_{self.tag}"
        self.subnet = ""  # "10.77.N"
        self.hosts: dict[str, Host] = {}
        self.root_procs: list[subprocess.Popen[bytes]] = []
        self._next = 10
        self._closed = False

    # ------------------------------------------------------------ set up

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge."""
        return f"{self.subnet}.1"

    def create(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with _locked(STATE_DIR / "lock"):
            _reap_abandoned()
            used = _subnets_in_use()
            third = next((n for n in range(1, 255) if n not in used), None)
            if third is None:
                raise RuntimeError(f"no free {SUBNET_PREFIX}.N.0/24 subnet for the test network")
            self.subnet = f"{SUBNET_PREFIX}.{third}"
            (STATE_DIR / f"{self.tag}.json").write_text(
                json.dumps({"pid": os.getpid(), "bridge": self.bridge, "tag": self.tag})
            )
            ip("link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            nft(_partition_table(self.nft_table))

    def add_host(self, name: str, number: int | None = None) -> Host:
        """A new namespace on the bridge at 10.77.N.`number`."""
        if number is None:
            number = self._next
            self._next += 1
        ns = f"roost-{self.tag}-{name}"
        veth, peer = f"rv{self.tag}{number}", f"rp{self.tag}{number}"
        addr = f"{self.subnet}.{number}"
        ip("netns", "add", ns)
        host = Host(name=name, ns=ns, ip=addr, veth=veth, data=self.base / name / "data")
        self.hosts[name] = host
        ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", ns)
        ip("link", "set", veth, "master", self.bridge)
        ip("link", "set", veth, "up")
        ip("-n", ns, "link", "set", peer, "name", "eth0")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        host.data.parent.mkdir(parents=True, exist_ok=True)
        return host

    # ------------------------------------------------------------ processes

    def spawn(
        self,
        host: Host | None,
        argv: Sequence[str],
        env: dict[str, str],
        log: Path,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in `host`'s namespace (None: the root namespace), output to `log`."""
        full = list(argv)
        if host is not None:
            # Its own UTS namespace too, so the host has its own hostname.
            naming = [_tool("unshare"), "--uts", "/bin/sh", "-c", 'hostname "$0" && exec "$@"']
            full = [_tool("ip"), "netns", "exec", host.ns, *naming, host.name, *argv]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                full,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (self.root_procs if host is None else host.procs).append(proc)
        return proc

    def run_in(
        self, host: Host, argv: Sequence[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", host.ns, *argv], capture_output=True, text=True, timeout=timeout
        )

    def pids(self, host: Host) -> list[int]:
        return ns_pids(host.ns)

    def kill_host(self, host: Host) -> None:
        """SIGKILL every process in the host's namespace (a power cut)."""
        _kill_ns(host.ns)
        self._reap(host)

    def stop_host(self, host: Host, grace: float = 20.0) -> None:
        """SIGTERM the host's daemons, wait for them to finish, then kill what is left."""
        for p in host.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in host.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        self.kill_host(host)

    def _reap(self, host: Host) -> None:
        for p in host.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        host.procs = [p for p in host.procs if p.poll() is None]

    # ------------------------------------------------------------ network faults

    def partition(self, host: Host) -> None:
        """Drop every IP packet to and from the host at its bridge port (ARP still passes)."""
        nft(f"add element bridge {self.nft_table} parted {{ {host.veth} }}")
        host.partitioned = True

    def heal(self, host: Host) -> None:
        nft(f"delete element bridge {self.nft_table} parted {{ {host.veth} }}")
        host.partitioned = False

    # ------------------------------------------------------------ tear down

    def close(self) -> None:
        """Kill every process, remove namespaces and the bridge (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            _kill_ns(host.ns)
        for p in self.root_procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        for host in self.hosts.values():
            for p in host.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
            ip("netns", "del", host.ns, check=False)
            ip("link", "del", host.veth, check=False)
        ip("link", "del", self.bridge, check=False)
        _drop_table(self.nft_table)
        (STATE_DIR / f"{self.tag}.json").unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """What of this network still exists (for teardown assertions)."""
        out = []
        listed = ip("netns", "list", check=False).stdout
        out += [h.ns for h in self.hosts.values() if re.search(rf"^{h.ns}\b", listed, re.M)]
        if ip("link", "show", self.bridge, check=False).returncode == 0:
            out.append(self.bridge)
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        if f"bridge {self.nft_table}" in tables:
            out.append(f"nft table {self.nft_table}")
        return out


# A killed process is listed until its last thread has left the kernel:
# seen in loaded full runs (load 15-27), a daemon `R` (runnable: waiting
# for a CPU to finish its exit) and its weed children `Z` (a leader gone,
# threads still exiting) 10 s after SIGKILL. Neither is stuck (that would be
# `D`, where `_where` names the wait); they queue for two busy cores.
def _kill_ns(ns: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    killed: dict[int, list[str]] = {}  # each pid's command line, read once
    while True:
        pids = ns_pids(ns)
        if not pids:
            # What the host's weed mounts left in /tmp (a killed host runs
            # no stop): their sockets, named by their directories.
            for argv in killed.values():
                seaweed.forget_mount_socket(argv)
            return
        for pid in pids:
            if pid not in killed:
                with contextlib.suppress(OSError):
                    killed[pid] = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes in {ns} survive SIGKILL: {_where(pids)}")
        time.sleep(0.05)


def _where(pids: list[int]) -> str:
    """Each pid's name, state and kernel wait point: a process that outlives
    SIGKILL is stuck in the kernel (D state: a FUSE request, the disk), and
    that says where."""
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            out.append(f"{pid} (gone)")
            continue
        name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
        out.append(f"{pid} {name} {state} {wchan or '-'}")
    return ", ".join(out)


def _drop_table(name: str) -> None:
    subprocess.run(["nft", "delete", "table", "bridge", name], capture_output=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _subnets_in_use() -> set[int]:
    out = ip("-4", "-o", "addr", "show", check=False).stdout
    prefix = re.escape(SUBNET_PREFIX)
    return {int(m) for m in re.findall(rf"inet {prefix}\.(\d+)\.\d+/", out)}


def _reap_abandoned() -> None:
    """Remove networks of sessions that died without tearing down."""
    for record in STATE_DIR.glob("*.json"):
        try:
            info = json.loads(record.read_text())
            pid, tag, bridge = int(info["pid"]), str(info["tag"]), str(info["bridge"])
        except (ValueError, KeyError, OSError):
            record.unlink(missing_ok=True)
            continue
        if _pid_alive(pid):
            continue
        for ns in ip("netns", "list", check=False).stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith(f"roost-{tag}-"):
                with contextlib.suppress(RuntimeError):
                    _kill_ns(name)
                ip("netns", "del", name, check=False)
        ip("link", "del", bridge, check=False)
        _drop_table(f"roost_{tag}")
        record.unlink(missing_ok=True)
