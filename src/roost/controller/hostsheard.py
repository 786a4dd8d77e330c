"""Hosts heard coming up, written to the hosts table off the heartbeat path.

A heartbeat is answered from memory as the RPC server reads it (see
`service.ControllerService.heartbeat`), never after a database write: a host
seen coming up is only noted here, and `loop` writes what was noted every
tick, in one transaction. A write that fails keeps its batch for the next
one, unless the host was heard again meanwhile (the newer record wins).
"""

from __future__ import annotations

import asyncio
import json
import logging

from roost.controller.astore import AsyncStore
from roost.controller.store import HostRecord
from roost.wire.messages import Heartbeat

log = logging.getLogger("roost.controller")


class HostsHeard:
    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._heard: dict[str, HostRecord] = {}
        self._up_again: set[str] = set()  # hosts seen down before: alerts (host-up)

    def note(self, hb: Heartbeat, up_again: bool = False) -> None:
        """Remember a host that came up; `record` writes it down (and, when it
        was down before, raises host-up)."""
        self._heard[hb.host_id] = HostRecord(
            hb.host_id, hb.hostname, json.dumps(hb.addresses), hb.memory_mb, hb.cpus
        )
        if up_again:
            self._up_again.add(hb.host_id)

    async def record(self) -> None:
        """Write the hosts heard coming up since the last call (one transaction)."""
        batch, self._heard = self._heard, {}
        try:
            await self._store.upsert_hosts(list(batch.values()))
        except BaseException:
            # Kept for the next call, unless heard again meanwhile (newer).
            self._heard = batch | self._heard
            raise
        up, self._up_again = self._up_again, set()
        for host in sorted(up):
            await self._store.notify_event("host-up", "", f"host {host} is up again", host=host)

    async def loop(self, every_s: float) -> None:
        """Every `every_s`, write down the hosts heard coming up."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.record()
            except Exception:
                log.exception("recording hosts failed")
