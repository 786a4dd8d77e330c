"""Redis Sentinel for the apps' Redis pairs: its configuration, the commands
that make it watch a master, and reading its answers (pure).

Theory of operation. Sentinel, not Roost, decides which copy of an app's
Redis is master (redisrepl.py). Sentinels run on at least three hosts (both
servicehosts of a pair and a third, the controller's), one process per host
watching every app's master as `roost-APP`, with quorum 2: two sentinels
must find a master unreachable before a failover is started, and a majority
of the sentinels that know it must then elect the one that runs it. One
host lost therefore never stops a failover, and a sentinel cut off alone can
neither declare a master dead nor promote anything.

Sentinel rewrites its own configuration file as it learns (the current
master, the replicas and other sentinels, the epoch of the last failover):
that file is its memory across restarts, so `render_conf` is written only
when there is none, and the masters to watch are given at run time
(`SENTINEL MONITOR`, `SENTINEL SET`) by `plan`, which only adds what is
missing and corrects what differs, never moves a master the sentinels know
elsewhere, and removes nothing (a sentinel shared by several pairs watches
masters other servicehosts registered; a master is forgotten only when its
app's Redis is removed, `forget`).

Sentinels log in to the masters and replicas as the copies' `roost-admin`
(REPLICAOF, CONFIG REWRITE, CLIENT KILL on failover, publishing hello
messages); clients of a sentinel and the sentinels among themselves use one
password, the cluster's sentinel password.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MASTER_PREFIX = "roost-"
QUORUM = 2
# A master silent this long is subjectively down; with quorum 2 the failover
# starts about then. Together with the election and the replica's promotion
# this keeps a Redis's write outage under the 10 s the issue asks for.
DOWN_AFTER_MS = 3000
# How long one failover attempt may take before another sentinel tries.
FAILOVER_TIMEOUT_MS = 10000
PIDFILE = "sentinel.pid"
CONF = "sentinel.conf"

Command = tuple[str, ...]


def master_name(app: str) -> str:
    """The name the sentinels know an app's Redis by."""
    return MASTER_PREFIX + app


@dataclass(frozen=True)
class SentinelSpec:
    """One host's sentinel."""

    port: int
    listen: Sequence[str]  # addresses it binds ("*" for all)
    announce_host: str  # the address other sentinels and clients reach it by
    password: str  # the cluster's sentinel password
    directory: Path


@dataclass(frozen=True)
class Monitor:
    """An app's Redis as a sentinel is to watch it."""

    name: str
    host: str  # its master now, as the registering servicehost knows it
    port: int
    auth_user: str
    auth_pass: str
    quorum: int = QUORUM
    down_after_ms: int = DOWN_AFTER_MS
    failover_timeout_ms: int = FAILOVER_TIMEOUT_MS


def render_conf(spec: SentinelSpec) -> str:
    """sentinel.conf for a sentinel that has none yet (module docstring)."""
    bind = "* -::*" if "*" in spec.listen else " ".join(spec.listen)
    return (
        "\n".join(
            [
                "# Written by Roost once; Sentinel rewrites it as it learns (keep it).",
                f"bind {bind}",
                f"port {spec.port}",
                "protected-mode no",
                "daemonize no",
                f'pidfile "{spec.directory / PIDFILE}"',
                'logfile ""',
                f'dir "{spec.directory}"',
                f"sentinel announce-ip {spec.announce_host}",
                f"sentinel announce-port {spec.port}",
                f"requirepass {spec.password}",
                f"sentinel sentinel-pass {spec.password}",
                # Masters are named by address (the servicehosts announce theirs).
                "sentinel resolve-hostnames no",
            ]
        )
        + "\n"
    )


def _settings(m: Monitor) -> dict[str, str]:
    return {
        "quorum": str(m.quorum),
        "down-after-milliseconds": str(m.down_after_ms),
        "failover-timeout": str(m.failover_timeout_ms),
        "parallel-syncs": "1",
    }


def plan(
    wanted: Iterable[Monitor], seen: Mapping[str, Mapping[str, str]], auth: bool = True
) -> list[Command]:
    """The commands that make one sentinel watch every `wanted` master.

    `seen`: name -> fields of SENTINEL MASTERS for what it watches now. A
    master it does not watch is added (MONITOR, then its login and timings);
    one it watches keeps the address it knows (a failover may have moved
    it), and gets any timing that differs, and its login again with `auth`
    (Sentinel never shows it back). Nothing to change: no command (each SET
    makes Sentinel rewrite its file, so the watch's passes send none).
    """
    out: list[Command] = []
    for m in sorted(wanted, key=lambda m: m.name):
        have = seen.get(m.name)
        if have is None:
            out.append(("SENTINEL", "MONITOR", m.name, m.host, str(m.port), str(m.quorum)))
            have = {}
        settings = {k: v for k, v in _settings(m).items() if have.get(k) != v}
        if auth or not seen.get(m.name):
            settings |= {"auth-user": m.auth_user, "auth-pass": m.auth_pass}
        if settings:
            args = [x for kv in sorted(settings.items()) for x in kv]
            out.append(("SENTINEL", "SET", m.name, *args))
    return out


def forget(name: str) -> Command:
    return ("SENTINEL", "REMOVE", name)


def masters_seen(reply: Sequence[Sequence[str]]) -> dict[str, dict[str, str]]:
    """SENTINEL MASTERS' reply (a flat field/value list per master) by name."""
    out: dict[str, dict[str, str]] = {}
    for flat in reply:
        fields = dict(zip(flat[::2], flat[1::2], strict=False))
        if "name" in fields:
            out[fields["name"]] = fields
    return out


def agreed_master(
    answers: Iterable[tuple[str, int] | None], quorum: int = QUORUM
) -> tuple[str, int] | None:
    """The master at least `quorum` sentinels name (None: no such agreement).

    `answers`: each reachable sentinel's SENTINEL GET-MASTER-ADDR-BY-NAME
    (None where it does not know the master); unreachable ones are absent.
    """
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    addr, n = votes.most_common(1)[0]
    return addr if n >= quorum else None


def address(reply: Sequence[str] | None) -> tuple[str, int] | None:
    """SENTINEL GET-MASTER-ADDR-BY-NAME's reply -> (host, port), or None."""
    if not reply or len(reply) != 2 or not str(reply[1]).isdigit():
        return None
    return str(reply[0]), int(reply[1])


# A replica Sentinel would not promote, whatever the master's INFO says:
# held down by this sentinel (s_down) or by a quorum (o_down), or with its
# link to the sentinel lost. The master lists a replica whose host died as
# online until its repl-timeout (60 s), and SENTINEL MASTER's num-slaves
# counts it all along.
DOWN_FLAGS = frozenset({"s_down", "o_down", "disconnected"})


@dataclass(frozen=True)
class MasterSeen:
    """One sentinel's view of a master: its SENTINEL MASTER fields ({} when
    it does not watch it) and its SENTINEL REPLICAS entries."""

    fields: Mapping[str, str]
    replicas: tuple[Mapping[str, str], ...] = ()


def replicas_seen(reply: Sequence[Sequence[str]]) -> tuple[dict[str, str], ...]:
    """SENTINEL REPLICAS' reply (a flat field/value list per replica)."""
    return tuple(dict(zip(flat[::2], flat[1::2], strict=False)) for flat in reply)


def _flags(replica: Mapping[str, str]) -> set[str]:
    return set(replica.get("flags", "").split(","))


def good_replica(replica: Mapping[str, str]) -> bool:
    """A replica the sentinels could promote: not held down nor cut from
    them (DOWN_FLAGS), and streaming from its master when it last said."""
    return not (_flags(replica) & DOWN_FLAGS) and replica.get("master-link-status") == "ok"


def replicas_down(replicas: Iterable[Mapping[str, str]]) -> frozenset[tuple[str, int]]:
    """The (ip, port) of each replica the sentinel holds down (DOWN_FLAGS)."""
    return frozenset(
        (r.get("ip", ""), int(r["port"]))
        for r in replicas
        if _flags(r) & DOWN_FLAGS and r.get("port", "").isdigit()
    )


def failover_problem(seen: MasterSeen, sentinels: int) -> str:
    """What keeps the sentinels from failing a master over, from one
    sentinel's view of it ("" when nothing does): no replica they could
    promote (none discovered yet: they read the master's INFO every 10 s;
    or every one they know down or not streaming), or fewer sentinels
    watching it than run (one more lost, no majority)."""
    if not seen.fields:
        return "the sentinels do not watch it"
    if not any(good_replica(r) for r in seen.replicas):
        if seen.replicas:
            names = ", ".join(sorted(r.get("name", "?") for r in seen.replicas))
            return f"the sentinels know no replica of it fit to take over ({names})"
        return "the sentinels know no replica of it yet: it cannot fail over"
    watching = int(seen.fields.get("num-other-sentinels", "0") or 0) + 1
    if watching < sentinels:
        return f"only {watching} of {sentinels} sentinels watch it"
    return ""


def pair_failover_problem(others: Mapping[str, MasterSeen | None], sentinels: int) -> str:
    """`failover_problem` as the other sentinels see the master (`others`:
    each one's view by its host, None when it did not answer): the first
    that knows no replica fit to promote or too few sentinels, named.
    The sentinel that leads a failover may be any of them, and one that has
    not read the master's INFO since the replica came knows no replica and
    aborts the failover ("no good slave") while this host's sentinel, which
    has, sees nothing wrong."""
    for host, seen in sorted(others.items()):
        if seen is None:
            continue  # down or unreachable: the others count it out
        problem = failover_problem(seen, sentinels)
        if problem:
            return f"{problem} (the sentinel on {host})"
    return ""
