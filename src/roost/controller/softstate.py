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


class SoftState:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.hosts: dict[str, HostSeen] = {}

    def record(self, hb: Heartbeat, now: float) -> bool:
        """Store a heartbeat; True when the host was unknown or down before."""
        seen = self.hosts.get(hb.host_id)
        came_back = seen is None or seen.down_since is not None
        self.hosts[hb.host_id] = HostSeen(heartbeat=hb, last_seen=now)
        return came_back

    def mark_down(self, now: float) -> list[str]:
        """Hosts silent for longer than the grace period; returns newly down ones."""
        newly: list[str] = []
        for host_id, seen in self.hosts.items():
            if seen.down_since is None and now - seen.last_seen > self.grace_s:
                seen.down_since = now
                newly.append(host_id)
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
