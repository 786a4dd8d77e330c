"""One filer for every mount while it lives: each host's filer front (pure).

Theory of operation. Two filers share the tree's metadata store
(weedstore.py), but a `weed mount` learns of changes it did not make from
ONE filer's metadata event stream, and a change made through the other
filer reaches that stream only after the filers' aggregators pass it on
(measured on loopback: about 0.25 s through the same filer, more under
load; the filers' stores agree at once). A mount answers a name in a
directory it has listed from its cache, so a file created through filer A
is missing through a mount following filer B until that event arrives.
And `weed mount -filer=A,B` (4.48) starts at a random one of the list
(`weed/mount/weedfs.go`: `filerIndex = rand.IntN(...)`), so the mounts of a
cluster spread over both filers.

So no mount is given the filers themselves. Each host that mounts the
tree runs a front (HAProxy, TCP, on its own address) that hands every
connection to the first filer while its health check passes and to the
second only while the first fails: every mount in the cluster then
follows the same filer's event stream, as with one filer, and they move
together. A filer marked down has its sessions cut (the mounts reconnect
through the front to the second at once, rather than wait on a silent
host's socket, resuming their event stream; a weed mount whose stream
restarts drops its cached listings, so it reads the store afresh). One
marked up again takes new sessions only: cutting the second's
(`on-marked-up shutdown-backup-sessions`) failed a write in flight with
EIO (weed mount 4.48 retries a volume assignment on the closing
connection, three times at once), a price for a filer's return that
nothing else asks. So after a failover mounts may stay on the second;
lookups do not depend on it (a listing is trusted for one second,
seaweed.mount_argv), only how late a fresh listing hears of another
filer's change. At a cluster's start each host's mount waits (at most a
minute) for the first filer to answer (weednode.py), so all begin there.

Health: a TCP connect to each filer's gRPC port every second; two
failures (a connect times out after a second on a silent host) mark it
down, about 3 s after a host dies; three passes mark it up. The HTTP
front follows the gRPC one's view (`track`), so both move together.
"""

from __future__ import annotations

from roost.datadir.seaweed import Endpoint

FRONT_PORT = 7153  # the front's HTTP port on each mounting host; gRPC at +10000
GRPC_OFFSET = 10000  # weed's gRPC port beside each HTTP one
CONFIG_FILE = "filer-front.cfg"  # in DATA/weed
CHECK_INTER_MS = 1000
FALL = 2
RISE = 3


def front(host: str, port: int = FRONT_PORT) -> Endpoint:
    """What this host's mounts are given as their filer."""
    return Endpoint(host, port)


def argv(haproxy: str, config: str) -> list[str]:
    # -db: in the foreground, so weednode supervises and adopts it as any
    # other part (its command line names this host's DATA).
    return [haproxy, "-db", "-f", config]


def config(host: str, filers: list[str], filer_port: int, port: int = FRONT_PORT) -> str:
    """HAProxy's configuration: the filers in order, the first preferred;
    the front on `host`:`port` (HTTP) and +10000 (gRPC), as a filer."""
    if len(filers) < 2:
        raise ValueError("a filer front needs two filers")
    lines = [
        "# Written by roost from appdata.json (roost.datadir.filerfront).",
        "global",
        "  maxconn 4096",
        "defaults",
        "  mode tcp",
        "  timeout connect 1s",
        # Event streams stay open and quiet for long: no idle cut.
        "  timeout client 24h",
        "  timeout server 24h",
        f"  default-server inter {CHECK_INTER_MS} fall {FALL} rise {RISE}"
        " on-marked-down shutdown-sessions",
    ]
    grpc = "filer-grpc"
    for name, offset in ((grpc, GRPC_OFFSET), ("filer-http", 0)):
        lines += [f"listen {name}", f"  bind {Endpoint(host, port + offset)}"]
        for i, filer in enumerate(filers):
            at = Endpoint(filer, filer_port + offset)
            check = "check" if name == grpc else f"track {grpc}/f{i}"
            backup = " backup" if i else ""
            lines.append(f"  server f{i} {at} {check}{backup}")
    return "\n".join([*lines, ""])
