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

`Silence` decides (pure, a clock given); `probe` and `cut` are the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

from roost.datadir.seaweed import Endpoint

log = logging.getLogger("roost.datadir.weed")

SILENT_S = 5.0  # unanswered this long: cut (the heartbeat is every few seconds)
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


def probe(server: Endpoint, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does the volume server answer its /status in time?"""
    try:
        with urllib.request.urlopen(f"http://{server}/status", timeout=timeout) as r:
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
