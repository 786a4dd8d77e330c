"""A role whose port another process took: `roost up` gives it another.

Theory of operation. `roost up` chooses its roles' ports (`roost.cli.local`:
free, below the kernel's ephemeral range), writes them into the address
book (DATA/cluster.json) and the metrics list, then starts the roles, which
bind them: seconds later for those started once the controller serves.
Meanwhile any other process may take one (another `roost up`, a test's
daemon), and the role then exits "Address already in use" at every start,
since `roost up` keeps the ports it wrote.

The choice and the bind cannot be made one step here: each role binds its
own addresses with ZeroMQ, in its own process, from the address book it
reads at its start, so `roost up` has no socket of them to hold and hand
over (as it does the router's HTTP ports). Hence the remedy comes after
the fact. When a role (or a process of several, `roost.cli.uphost`) exited
because an address was in use, its next start first gives each of its
ports that the exit named, or that is taken now, a new free port: the
address book (or DATA/metrics.json) is rewritten, and every other daemon
that connects to a moved address is replaced as a reload replaces it
(`roost.cli.reload.plan`: the runner and the servicehost hand their
tenants over), since each daemon reads the address book only at its start
(`READS`: which addresses each one reads).

To make that rarer, `roost up` holds each port it chose (bound, neither
listening nor reusable: `roost.cli.local.hold`) until just before the
daemon given it starts, so that the others' look at whether it is free
fails meanwhile; it can still be taken between that start and the bind.

Decisions are pure functions over data (`in_use`, `owned`, `to_move`,
`readdressed`, `readers`, `to_replace`); `Readdress` is the I/O:
`before_start` (a program's start hook) and `run` (the replacements).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec

from roost.cli.local import SERVED_BY, free_port, port_free, release
from roost.cli.reload import Step
from roost.proc.children import Child
from roost.proc.supervise import Supervisor
from roost.wire.cluster import ClusterConfig, Endpoint

# The address-book roles each daemon connects to, read once at its start
# (tests/cli/test_readdress.py checks this against the daemons' code).
READS: dict[str, frozenset[str]] = {
    "controller": frozenset({"builder", "servicehost", "backupd"}),
    "builder": frozenset({"controller"}),
    "runner": frozenset({"controller", "images", "servicehost"}),
    "router": frozenset({"controller", "controller-pub", "images"}),
    "gateway": frozenset({"controller", "servicehost"}),
    "servicehost": frozenset({"controller", "backupd"}),
    "backupd": frozenset({"controller", "images", "servicehost", "gateway"}),
}

# A port `roost up` gave a role: ("address", address-book role) or ("metrics", daemon).
Port = tuple[str, str]

_IN_USE = re.compile(r"address already in use", re.IGNORECASE)
# What names the port: ZeroMQ's "(addr='tcp://127.0.0.1:18300')" (or a bare
# tcp://HOST:PORT), asyncio's "on address ('127.0.0.1', 18300)".
_NAMED = (re.compile(r"tcp://[^\s'\")]*:(\d+)"), re.compile(r"\('[^']*', (\d+)\)"))


@dataclass(frozen=True)
class InUse:
    """What an exit said of addresses in use."""

    ports: frozenset[int]  # the ports it named
    unnamed: bool  # a line said so naming none (a plain EADDRINUSE)


def in_use(error: str) -> InUse | None:
    """The ports an exit's last words (a child's `last_error`) say were in
    use; None when they say nothing of the kind."""
    ports: set[int] = set()
    unnamed = False
    found = False
    for line in error.splitlines():
        if not _IN_USE.search(line):
            continue
        found = True
        named = {int(m) for pattern in _NAMED for m in pattern.findall(line)}
        ports |= named
        unnamed = unnamed or not named
    return InUse(frozenset(ports), unnamed) if found else None


def port_of(url_or_address: str) -> int | None:
    """The port of "tcp://HOST:PORT" or "http://HOST:PORT/path"; None if it names none."""
    hostport = url_or_address.split("://", 1)[-1].split("/", 1)[0]
    _, _, port = hostport.rpartition(":")
    return int(port) if port.isdigit() else None


def owned(
    cluster: ClusterConfig, members: Iterable[str], metrics: Mapping[str, str]
) -> dict[Port, int]:
    """The ports `roost up` gave the daemons `members` (one program's): the
    addresses they serve and their metrics ports. The controller's metrics
    are on its API port, which is the operator's, not ours to move."""
    members = set(members)
    out: dict[Port, int] = {}
    for role, owner in SERVED_BY.items():
        for ep in cluster.of(role) if owner in members else []:
            port = port_of(ep.address)
            if port is not None:
                out[("address", role)] = port
    for role in sorted(members - {"controller"}):
        port = port_of(metrics.get(role, ""))
        if port is not None:
            out[("metrics", role)] = port
    return out


def to_move(own: Mapping[Port, int], clash: InUse, busy: Iterable[int]) -> list[Port]:
    """Which of a program's ports move after an exit that said `clash`: those
    it named, and those taken now (`busy`: what a plain EADDRINUSE, naming
    none, must have meant; and what would fail the next start anyway)."""
    taken = clash.ports | set(busy)
    return [key for key, port in own.items() if port in taken]


def readdressed(cluster: ClusterConfig, ports: Mapping[str, int]) -> ClusterConfig:
    """The address book with each endpoint of role -> port on that port."""
    endpoints = {
        role: [
            Endpoint(f"{ep.address.rpartition(':')[0]}:{ports[role]}", ep.public_key)
            if role in ports
            else ep
            for ep in eps
        ]
        for role, eps in cluster.endpoints.items()
    }
    return msgspec.structs.replace(cluster, endpoints=endpoints)


def readers(moved: Iterable[str]) -> set[str]:
    """The daemons that connect to any of the address-book roles `moved`."""
    moved = set(moved)
    return {daemon for daemon, reads in READS.items() if reads & moved}


def to_replace(daemons: Iterable[str], groups: Mapping[str, list[str]], program: str) -> set[str]:
    """The programs to replace for `daemons` (a daemon sharing a process is
    replaced with its host, `roost.cli.uphost`), but `program`, which is
    starting again already."""
    host_of = {m: name for name, members in groups.items() for m in members}
    return {host_of.get(d, d) for d in daemons} - {program}


class Readdress:
    """The I/O: a program's ports moved at its start after an exit saying an
    address was in use, and the daemons that read them replaced."""

    def __init__(
        self,
        data: Path,
        host: str,
        metrics: dict[str, str],
        groups: Mapping[str, list[str]],
        say: Callable[[str], None],
    ) -> None:
        self.data = data
        self.host = host
        self.metrics = metrics  # role -> its metrics URL, shared with roost up
        self.groups = groups
        self.say = say
        self._handled: dict[str, float] = {}  # program -> its exit handled (ended_at)
        self._wanted: set[str] = set()
        self._asked = asyncio.Event()

    def before_start(self, program: str, child: Child | None) -> None:
        """Called just before `program` starts: the ports held for it since
        they were chosen (`roost.cli.local.hold`) are let go, its daemons
        bind them now; and after an exit of it that said an address was in
        use (each handled once), those taken move."""
        book = self.data / "cluster.json"
        try:
            cluster = ClusterConfig.load(book)
        except (OSError, ValueError):
            return  # its daemons say what is wrong with it, and stop roost up
        own = owned(cluster, self.groups.get(program, [program]), self.metrics)
        release(own.values())
        if child is None or not child.ended_at or self._handled.get(program) == child.ended_at:
            return
        self._handled[program] = child.ended_at
        clash = in_use(child.last_error)
        if clash is None:
            return
        busy = [port for port in own.values() if not port_free(self.host, port)]
        moving = to_move(own, clash, busy)
        if not moving:
            return
        new = {key: free_port(self.host) for key in moving}
        addresses = {role: port for (kind, role), port in new.items() if kind == "address"}
        for (kind, role), port in new.items():
            what = f"its {role} address" if kind == "address" else f"{role}'s metrics"
            self.say(
                f"{program}: port {own[(kind, role)]} is in use by another process: "
                f"{what} moves to {self.host}:{port}"
            )
            if kind == "metrics":
                self.metrics[role] = f"http://{self.host}:{port}/metrics"
        if addresses:
            readdressed(cluster, addresses).save(book)
        if len(addresses) < len(new):
            (self.data / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
        others = to_replace(readers(addresses), self.groups, program)
        if others:
            self._wanted |= others
            self._asked.set()

    async def run(
        self, sup: Supervisor, steps: list[Step], timeout: Callable[[str], float]
    ) -> None:
        """Until cancelled: replace the programs that read a moved address,
        one at a time in start order, each as a reload would."""
        while True:
            await self._asked.wait()
            self._asked.clear()
            wanted, self._wanted = self._wanted, set()
            for step in steps:
                if step.role not in wanted or step.role not in sup.children:
                    continue
                if sup.stopping:
                    return
                self.say(f"replacing {step.role}: an address it reads has moved")
                await sup.replace(step.role, step.signal, timeout(step.role), step.overlap)
