"""The master lets go of a volume server whose host went silent, at once.

Theory of operation. A SeaweedFS master drops a volume server only when
that server's heartbeat stream breaks (weed/server/master_grpc_server.go).
A host that dies silently (a power cut: no FIN, no RST) breaks it only by
gRPC keepalive, compiled into 4.48 (weed/pb/grpc_client_server.go: a ping
after 60 s idle, 20 s for its answer) and no flag shortens it
(`-pulseSeconds` is gone). Until then the master keeps assigning new
chunks to volumes with a copy on the dead host, and the writes wait: 83 s
in the namespace test.

So the host that runs a master also asks every volume server it knows,
each second, for its `/status`; one that has not answered for SILENT_S
has the master's side of its connections destroyed (`ss -K`,
SOCK_DESTROY: the kernel aborts the socket, the stream ends with an
error) and the master unregisters it there and then, as if the stream had
broken. A server that was only slow loses nothing by it: it connects
again and heartbeats at once. Once per silence: it is cut again only
after it has answered in between.

The other way round too (`watch_masters`): the filers and volume servers
stream from the masters' leader (the master client's KeepConnected, the
volume server's heartbeat), and when the leader's host goes silent the
two masters left elect another (about 5 s with seaweed.ELECTION_TIMEOUT_S),
but each stream waits on the dead one until keepalive or TCP gives up: 41 s
for the second filer, 50 s for a volume server in tests/cluster/
test_shared_datadir_filers.py, and no new chunk is placed meanwhile (the
filer asks the dead master, the new leader knows no volume). Writes
resumed 51 to 62 s after the cut. So every host that runs a filer or a volume
server tries each other master, each second, for a TCP connection; while
one has been silent for MASTER_SILENT_S, every TCP connection of this host to
its gRPC port is destroyed, each second (a connect in progress too: weed
dials the masters in their listed order, the dead one first, and a SYN
to a silent host waits 20 s), so the streams end at once and weed's own
loops go on to the next master, which names the new leader. They reach it
about 11 s after the cut; writes resume 24 to 26 s after it, held by what
no flag changes: the new leader refuses to assign until its warm-up ends,
15 s after its election (weed/topology/topology.go, IsWarmingUp: 3 volume
pulses of 5 s), and the filer retries an assignment after 1, 1.5, 2.25,
3.4, 5.1 and 6 s.

`Silence` decides (pure, a clock given); `probe`, `cut`, `answers` and
`cut_to` are the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

from roost.datadir.seaweed import Endpoint

log = logging.getLogger("roost.datadir.weed")

SILENT_S = 5.0  # unanswered this long: cut (the heartbeat is every few seconds)
MASTER_SILENT_S = 3.0  # a master: each second of it delays the volume servers' next try
PROBE_TIMEOUT_S = 1.0
EVERY_S = 1.0
GRPC_OFFSET = 10000  # weed's gRPC port beside each HTTP one (no -port.grpc given)


@dataclass
class Silence:
    """When each volume server last answered, and which were cut since."""

    silent_s: float = SILENT_S
    answered: dict[Endpoint, float] = field(default_factory=dict)
    cut: set[Endpoint] = field(default_factory=set)

    def observe(self, server: Endpoint, answered: bool, now: float) -> bool:
        """Record one probe; True when `server` is to be cut now."""
        if answered:
            self.answered[server] = now
            self.cut.discard(server)
            return False
        since = self.answered.setdefault(server, now)  # never answered: from now
        if server in self.cut or now - since < self.silent_s:
            return False
        self.cut.add(server)
        return True

    def silent(self, server: Endpoint, answered: bool, now: float) -> bool:
        """Record one probe; True on every probe once `server` has been
        silent for `silent_s` (a master: its connections are cut each time)."""
        if answered:
            self.answered[server] = now
            return False
        return now - self.answered.setdefault(server, now) >= self.silent_s


def probe(server: Endpoint, timeout: float = PROBE_TIMEOUT_S, path: str = "/status") -> bool:
    """Does the server (a volume server's /status by default) answer in time?"""
    try:
        with urllib.request.urlopen(f"http://{server}{path}", timeout=timeout) as r:
            r.read(1)
            return True
    except OSError:
        return False


def cut(master: Endpoint, server: Endpoint) -> bool:
    """Destroy the master's established TCP connections from `server`'s
    address on its gRPC port (where heartbeats stream). False when `ss`
    failed (no ss, or no SOCK_DESTROY in this kernel)."""
    argv = [
        "ss", "-K", "-t", "-n", "state", "established",
        "src", f"{master.ip}:{master.port + GRPC_OFFSET}", "dst", server.ip,
    ]  # fmt: skip
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not cut %s from the master: %s", server, exc)
        return False
    if r.returncode != 0:
        log.warning("could not cut %s from the master: %s", server, r.stderr.strip())
        return False
    return True


def cut_to_argv(master: Endpoint) -> list[str]:
    """`ss` destroying every connection of this host to `master`'s gRPC port,
    in any state but listening (established streams and connects alike)."""
    return [
        "ss", "-K", "-t", "-n", "state", "connected",
        "dst", f"{master.ip}:{master.port + GRPC_OFFSET}",
    ]  # fmt: skip


async def answers(master: Endpoint, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does `master` accept a TCP connection on its HTTP port in time? On the
    event loop, not in a thread: a role whose thread pool is busy (the
    servicehost's) must still see a silent host in time."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(master.ip, master.port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def cut_to(master: Endpoint) -> bool:
    """Destroy this host's connections to a silent master (`cut_to_argv`)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *cut_to_argv(master), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        log.warning("could not cut the connections to master %s: %s", master, exc)
        return False
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("could not cut the connections to master %s: ss timed out", master)
        return False
    if proc.returncode != 0:
        log.warning("could not cut the connections to master %s: %s", master, err.decode().strip())
        return False
    return True


async def watch_masters(masters: list[Endpoint], every_s: float = EVERY_S) -> None:
    """Probe `masters` for ever; while one is silent, cut this host's
    connections to it (a task of the role that runs a filer or a volume
    server here)."""
    silence = Silence(silent_s=MASTER_SILENT_S)
    while True:
        started = time.monotonic()
        try:
            heard = await asyncio.gather(*(answers(m) for m in masters))
            now = time.monotonic()
            for master, answered in zip(masters, heard, strict=True):
                if silence.silent(master, answered, now):
                    if master not in silence.cut:
                        log.warning(
                            "master %s silent for %.0fs: cutting to it", master, MASTER_SILENT_S
                        )
                        silence.cut.add(master)
                    await cut_to(master)
                elif answered:
                    silence.cut.discard(master)
        except Exception:  # never the role's end: weed's keepalive remains
            log.exception("watching the masters")
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - started)))


async def watch(master: Endpoint, servers: list[Endpoint], every_s: float = EVERY_S) -> None:
    """Probe `servers` for ever, cutting each that goes silent (a task of
    the role that runs `master`)."""
    silence = Silence()
    while True:
        started = time.monotonic()
        try:
            await _round(master, servers, silence)
        except Exception:  # never the role's end: the master's keepalive remains
            log.exception("watching the volume servers")
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - started)))


async def _round(master: Endpoint, servers: list[Endpoint], silence: Silence) -> None:
    answers = await asyncio.gather(*(asyncio.to_thread(probe, s) for s in servers))
    now = time.monotonic()
    for server, answered in zip(servers, answers, strict=True):
        if silence.observe(server, answered, now):
            log.warning(
                "volume server %s silent for %.0fs: the master lets go of it",
                server, silence.silent_s,
            )  # fmt: skip
            await asyncio.to_thread(cut, master, server)
