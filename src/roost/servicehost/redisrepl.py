"""Each app's Redis as a master and a replica on the other servicehost of
its pair: the replication part of redis.conf, and what INFO replication
says about it (pure).

Theory of operation. In a cluster an app's Redis runs twice, on the two
servicehosts of its pair, with the same port and the same passwords (app,
admin, backup, replica), so either copy can serve as master and nothing the
app, the sentinels or backupd hold changes when they swap. Which one is
master is Redis Sentinel's decision (sentinel.py), never the servicehost's:
a copy is started as the replica of the address the sentinels name, or, when
no sentinel answers, in the role its state records, and the servicehost
never sends REPLICAOF to a running copy (that would fight Sentinel).

The replica logs in to its master as `roost-replica`, a user that may only
PSYNC/SYNC/REPLCONF/PING; both copies carry that user, since either may be
master. Each copy announces the address its peers reach it by, as the
sentinels then name it to every client (`replica-announce-ip`): a server
listening on loopback and a public address would otherwise be named by
whatever source address its connection happened to use.

There is deliberately no `min-replicas-to-write`: with it a master whose
replica's host died refuses every write until the replica is back, which
turns losing either host into an outage. An app that must not lose a write
on failover asks for it (WAIT 1 after the write: acknowledged by the replica
before the master answers).

Health (`judge`): a master with no replica online, or one more than
`max_lag_bytes` behind, is a problem the servicehost reports (a platform
event, through its status push); so is a replica whose link to its master
is down.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLICA_USER = "roost-replica"
# What a replica needs of its master, and nothing else.
REPLICA_ALLOWED = ("+psync", "+sync", "+replconf", "+ping")
# A replica this far behind its master (bytes of replication stream) is
# reported: about a second of heavy writes, well past normal jitter.
MAX_LAG_BYTES = 1 << 20


@dataclass(frozen=True)
class Replication:
    """This copy's place in its pair."""

    # The address its peers and the sentinels reach this copy by.
    announce_host: str
    # The password of `roost-replica`, the same on both copies.
    replica_password: str
    # The master's (host, port) when this copy starts as a replica; None
    # when it starts as master.
    master: tuple[str, int] | None = None


def conf_lines(repl: Replication, port: int) -> list[str]:
    """The redis.conf lines of a copy in a pair (module docstring)."""
    lines = [
        f"replica-announce-ip {repl.announce_host}",
        f"replica-announce-port {port}",
        f"masteruser {REPLICA_USER}",
        f'masterauth "{repl.replica_password}"',
        "replica-read-only yes",
        # A replica cut from its master still answers reads with what it has
        # (the proxy sends apps to the master only; backups read the master).
        "replica-serve-stale-data yes",
        f"user {REPLICA_USER} on >{repl.replica_password} resetkeys resetchannels -@all "
        + " ".join(REPLICA_ALLOWED),
    ]
    if repl.master is not None:
        host, master_port = repl.master
        lines.append(f"replicaof {host} {master_port}")
    return lines


@dataclass(frozen=True)
class ReplicaSeen:
    """One replica as its master's INFO replication lists it."""

    host: str
    port: int
    state: str  # "online" once it streams; "wait_bgsave", "send_bulk" while syncing
    offset: int


@dataclass(frozen=True)
class ReplicationView:
    """One copy's INFO replication, read."""

    role: str  # "master" or "slave"
    offset: int  # master_repl_offset (a master) or slave_repl_offset (a replica)
    replicas: tuple[ReplicaSeen, ...] = ()
    # A replica's: its master, and whether its link to it is up.
    master_host: str = ""
    master_port: int = 0
    link_up: bool = False

    def lag_bytes(self) -> int:
        """A master's: how far its furthest online replica is behind (its
        offset when none is online: everything it holds is unreplicated)."""
        online = [r.offset for r in self.replicas if r.state == "online"]
        return self.offset - min(online) if online else self.offset


def _replica(value: str) -> ReplicaSeen | None:
    """`ip=10.0.0.2,port=6380,state=online,offset=123,lag=0` -> ReplicaSeen."""
    fields = dict(part.partition("=")[::2] for part in value.split(","))
    try:
        return ReplicaSeen(
            host=fields["ip"],
            port=int(fields["port"]),
            state=fields.get("state", ""),
            offset=int(fields.get("offset", "0")),
        )
    except (KeyError, ValueError):
        return None


def read_view(info: dict[str, str]) -> ReplicationView:
    """INFO replication (as `resp.parse_info` gives it) -> ReplicationView."""
    role = info.get("role", "")
    if role == "slave":
        return ReplicationView(
            role=role,
            offset=int(info.get("slave_repl_offset", "0") or 0),
            master_host=info.get("master_host", ""),
            master_port=int(info.get("master_port", "0") or 0),
            link_up=info.get("master_link_status") == "up",
        )
    replicas = tuple(
        r
        for key, value in sorted(info.items())
        if key.startswith("slave") and key[5:].isdigit()
        for r in [_replica(value)]
        if r is not None
    )
    return ReplicationView(
        role=role, offset=int(info.get("master_repl_offset", "0") or 0), replicas=replicas
    )


def judge(view: ReplicationView, max_lag_bytes: int = MAX_LAG_BYTES) -> str:
    """What is wrong with this copy's replication ("" when nothing is)."""
    if view.role == "slave":
        if not view.link_up:
            return f"replica: its link to the master {view.master_host}:{view.master_port} is down"
        return ""
    online = [r for r in view.replicas if r.state == "online"]
    if not online:
        syncing = [f"{r.host}:{r.port} ({r.state})" for r in view.replicas]
        if syncing:
            return "master: its replica is not streaming yet: " + ", ".join(syncing)
        return "master: no replica is connected (its writes exist on this host only)"
    lag = view.lag_bytes()
    if lag > max_lag_bytes:
        return f"master: its replica is {lag} bytes behind"
    return ""


def start_master(
    agreed: tuple[str, int] | None,
    own: tuple[str, int],
    partner: tuple[str, int],
    recorded_master: bool,
) -> tuple[str, int] | None:
    """Whom a copy follows when it starts (None: it starts as master).

    `agreed`: the master a quorum of sentinels names (sentinel.agreed_master),
    which always wins: after a failover the old master comes back as the new
    one's replica, never as a second master. With no agreement (the
    sentinels are starting too, or unreachable) the copy takes the role
    its state last recorded; should that be stale, the sentinels turn it
    into a replica once they see it.
    """
    if agreed is not None:
        return None if agreed == own else agreed
    return None if recorded_master else partner
