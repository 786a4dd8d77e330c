"""What the runners say, rebuilt from heartbeats on every controller replica.

Never persisted: after a restart every replica knows it again within one
heartbeat period. Time is passed in, so tests drive it with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.wire.messages import Heartbeat, InstanceStatus


@dataclass
class HostSeen:
    heartbeat: Heartbeat
    last_seen: float
    down_since: float | None = None
    # What of the heartbeat placement, rollouts and routes depend on.
    relevant: tuple[object, ...] = ()


def relevant(hb: Heartbeat) -> tuple[object, ...]:
    """The heartbeat less what changes every beat (memory, timestamps)."""
    return (
        tuple(hb.addresses),
        hb.memory_mb,
        tuple((s.instance_id, s.state, s.port, s.unix_socket, s.restarts) for s in hb.instances),
    )


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

    def record(self, hb: Heartbeat, now: float) -> bool:
        """Store a heartbeat; True when the host was unknown or down before."""
        if self.last_received is None or now - self.last_received > self.grace_s / 2:
            self.receiving_since = now
        self.last_received = now
        seen = self.hosts.get(hb.host_id)
        came_back = seen is None or seen.down_since is not None
        rel = relevant(hb)
        if came_back or seen is None or seen.relevant != rel:
            self.generation += 1
        self.hosts[hb.host_id] = HostSeen(heartbeat=hb, last_seen=now, relevant=rel)
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
        return newly

    def alive(self, host_id: str) -> bool:
        seen = self.hosts.get(host_id)
        return seen is not None and seen.down_since is None

    def alive_hosts(self) -> list[HostSeen]:
        return [s for s in self.hosts.values() if s.down_since is None]

    def statuses(self) -> dict[str, InstanceStatus]:
        """Instance states reported by live hosts (a down host's are unknown)."""
        out: dict[str, InstanceStatus] = {}
        for seen in self.hosts.values():
            if seen.down_since is not None:
                continue
            for st in seen.heartbeat.instances:
                out[st.instance_id] = st
        return out

    def addresses(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for host_id, seen in self.hosts.items():
            addrs = seen.heartbeat.addresses
            out[host_id] = addrs[0] if addrs else "127.0.0.1"
        return out
