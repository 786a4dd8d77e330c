"""Alerts the lease holder raises from what runners and servicehosts report.

An instance crash-looping or killed for running out of memory, and a
servicehost's disk nearly full, are not events anyone writes: they are
seen in soft state (heartbeats, servicehost status pushes). `InstanceWatch`
and `DiskWatch` are pure: they remember what they already raised, so each
incident is raised once (per instance id; per fall of a disk below the
threshold, raised again only after it came back 5 points above). They live
in memory: a new lease holder may raise an incident still going on once
more, which is better than never.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from roost.controller import aftercare
from roost.controller.astore import AsyncStore
from roost.wire.messages import InstanceStatus

log = logging.getLogger("roost.controller")

# How the runner words a kernel OOM kill in an instance's last error
# (runner/supervisor.py); the controller reads no runner module.
OOM_TEXT = "ran out of memory"
DISK_HYSTERESIS = 0.05


@dataclass(frozen=True)
class Raised:
    kind: str
    app: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "exited"


class InstanceWatch:
    def __init__(self) -> None:
        self._looping: set[str] = set()
        self._oom: set[str] = set()

    def look(self, statuses: Mapping[str, InstanceStatus], moved: Iterable[str]) -> list[Raised]:
        """Alerts for the instances that `moved` (ids whose status changed)."""
        out: list[Raised] = []
        for iid in sorted(moved):
            st = statuses.get(iid)
            if st is None:  # gone (or its host is down): forget it
                self._looping.discard(iid)
                self._oom.discard(iid)
                continue
            where = {
                "instance": iid, "process_type": st.process_type, "release": st.release,
                "restarts": st.restarts,
            }  # fmt: skip
            down = st.state in ("crashed", "backoff")
            if down and OOM_TEXT in st.last_error and iid not in self._oom:
                self._oom.add(iid)
                out.append(
                    Raised(
                        "instance-oom", st.app, f"{st.process_type} {iid}: {st.last_error}", where
                    )
                )
            if aftercare.crashes(st) >= aftercare.CRASHES and iid not in self._looping:
                self._looping.add(iid)
                why = _last_line(st.last_error)
                said = f"{st.process_type} {iid} crashed {aftercare.crashes(st)} times: {why}"
                out.append(Raised("instance-crash-loop", st.app, said, where))
        return out


class DiskWatch:
    def __init__(self) -> None:
        self._low: set[str] = set()

    def look(self, host: str, free: int, total: int, threshold: float) -> list[Raised]:
        """An alert when `host`'s disk first falls below `threshold` free."""
        if total <= 0:
            return []
        ratio = free / total
        if ratio >= threshold + DISK_HYSTERESIS:
            self._low.discard(host)
        if ratio >= threshold or host in self._low:
            return []
        self._low.add(host)
        said = f"servicehost {host}: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
        fields = {"host": host, "free_bytes": free, "total_bytes": total}
        return [Raised("disk-nearly-full", "", said, fields)]


class Watches:
    """The lease holder's watches, raising what they see through the store."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self.instance = InstanceWatch()
        self.disks = DiskWatch()

    async def instances(self, statuses: Mapping[str, InstanceStatus], moved: Iterable[str]) -> None:
        await self._raise(self.instance.look(statuses, moved))

    async def disk(self, host: str, free: int, total: int, threshold: float) -> None:
        await self._raise(self.disks.look(host, free, total, threshold))

    async def host_down(self, host: str) -> None:
        await self._raise([Raised("host-down", "", f"host {host} is down", {"host": host})])

    async def _raise(self, raised: list[Raised]) -> None:
        # An alert that cannot be stored must not fail the pass that saw it.
        for r in raised:
            try:
                await self.store.notify_event(r.kind, r.app, r.message, **r.fields)
            except Exception:
                log.exception("storing alert %s failed", r.kind)
