"""What the runners say, rebuilt from heartbeats on every controller replica.

Never persisted: after a restart every replica knows it again within one
heartbeat period. Time is passed in, so tests drive it with a fake clock.

Heartbeats arrive a thousand a second on a big cluster, each listing its
host's instances, so a beat that changes nothing a reconcile depends on
costs a tuple compare, and the rest is kept as indexes rather than rebuilt:
`statuses()` is a live view (instance id -> the status its host last
reported, live hosts only) and `take_changes()` hands the lease holder's
next pass exactly the instances and hosts that moved since its last one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from roost.wire.messages import Heartbeat, InstanceStatus


@dataclass
class HostSeen:
    heartbeat: Heartbeat
    last_seen: float
    down_since: float | None = None
    # What of the heartbeat placement, rollouts and routes depend on.
    relevant: tuple[object, ...] = ()
    # Instance id -> its place in the heartbeat's list; the same while the
    # beats' relevant part is (their instances come in the same order).
    index: dict[str, int] = field(default_factory=dict)

    def status(self, instance_id: str) -> InstanceStatus:
        return self.heartbeat.instances[self.index[instance_id]]


def _key(st: InstanceStatus) -> tuple[object, ...]:
    return (st.state, st.port, st.unix_socket, st.restarts)


def relevant(hb: Heartbeat) -> tuple[object, ...]:
    """The heartbeat less what changes every beat (memory, timestamps)."""
    return (
        tuple(hb.addresses),
        hb.memory_mb,
        tuple((s.instance_id, *_key(s)) for s in hb.instances),
    )


class Statuses(Mapping[str, InstanceStatus]):
    """Instance states reported by live hosts (a down host's are unknown)."""

    def __init__(self, soft: SoftState) -> None:
        self._soft = soft

    def __getitem__(self, instance_id: str) -> InstanceStatus:
        seen = self._soft.hosts.get(self._soft.reporter.get(instance_id, ""))
        if seen is None or seen.down_since is not None:
            raise KeyError(instance_id)
        return seen.status(instance_id)

    def __iter__(self) -> Iterator[str]:
        for seen in list(self._soft.hosts.values()):
            if seen.down_since is None:
                for iid in seen.index:
                    if self._soft.reporter.get(iid) == seen.heartbeat.host_id:
                        yield iid

    def __len__(self) -> int:
        return sum(1 for _ in self)


class SoftState:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.hosts: dict[str, HostSeen] = {}
        # Since when heartbeats have been arriving without a break longer than
        # half a grace period (None: never, or not since the last break).
        self.receiving_since: float | None = None
        self.last_received: float | None = None
        # Grows whenever something a reconcile depends on changed (an instance's
        # state, a host up or down): an unchanged generation means nothing to do.
        self.generation = 0
        # instance id -> the host that last reported it
        self.reporter: dict[str, str] = {}
        # What moved since the last take_changes(): instances whose state,
        # port or restarts changed (or that came or went), and hosts that
        # came up, went down, or changed address or memory.
        self._changed_instances: set[str] = set()
        self._changed_hosts: set[str] = set()
        self._statuses = Statuses(self)

    def record(self, hb: Heartbeat, now: float) -> bool:
        """Store a heartbeat; True when the host was unknown or down before."""
        if self.last_received is None or now - self.last_received > self.grace_s / 2:
            self.receiving_since = now
        self.last_received = now
        host = hb.host_id
        seen = self.hosts.get(host)
        came_back = seen is None or seen.down_since is not None
        rel = relevant(hb)
        if seen is not None and not came_back and seen.relevant == rel:
            index = seen.index  # the common beat: nothing moved
        else:
            self.generation += 1
            index = {st.instance_id: n for n, st in enumerate(hb.instances)}
            old = {iid: seen.status(iid) for iid in seen.index} if seen is not None else {}
            if came_back or seen is None or seen.relevant[:2] != rel[:2]:
                self._changed_hosts.add(host)
            for st in hb.instances:
                iid = st.instance_id
                was = old.get(iid)
                if came_back or was is None or _key(was) != _key(st):
                    self._changed_instances.add(iid)
                self.reporter[iid] = host
            for iid in old.keys() - index.keys():
                self._changed_instances.add(iid)
                if self.reporter.get(iid) == host:
                    del self.reporter[iid]
        self.hosts[host] = HostSeen(heartbeat=hb, last_seen=now, relevant=rel, index=index)
        return came_back

    def informed(self, now: float) -> bool:
        """True when this replica has heard heartbeats without a break for a grace period.

        Every runner heartbeats every replica, so such a replica knows every
        live host: a follower taking the lease over may place at once instead
        of waiting a grace period as a replica that just started must.
        """
        return (
            self.receiving_since is not None
            and self.last_received is not None
            and now - self.last_received <= self.grace_s / 2
            and now - self.receiving_since >= self.grace_s
        )

    def mark_down(self, now: float) -> list[str]:
        """Hosts silent for longer than the grace period; returns newly down ones."""
        newly: list[str] = []
        for host_id, seen in self.hosts.items():
            if seen.down_since is None and now - seen.last_seen > self.grace_s:
                seen.down_since = now
                newly.append(host_id)
                self.generation += 1
                self._changed_hosts.add(host_id)
                self._changed_instances.update(seen.index)
        return newly

    def take_changes(self) -> tuple[set[str], set[str]]:
        """(instances, hosts) that moved since the last call (see `record`)."""
        out = (self._changed_instances, self._changed_hosts)
        self._changed_instances, self._changed_hosts = set(), set()
        return out

    def alive(self, host_id: str) -> bool:
        seen = self.hosts.get(host_id)
        return seen is not None and seen.down_since is None

    def alive_hosts(self) -> list[HostSeen]:
        return [s for s in self.hosts.values() if s.down_since is None]

    def statuses(self) -> Mapping[str, InstanceStatus]:
        """Instance states reported by live hosts (a live view: no copy is made)."""
        return self._statuses

    def addresses(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for host_id, seen in self.hosts.items():
            addrs = seen.heartbeat.addresses
            out[host_id] = addrs[0] if addrs else "127.0.0.1"
        return out
