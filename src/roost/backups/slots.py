"""Each backupd's own replication slots: several backupds pull one cluster.

A platform may run two backupds (two locations), each with its own history,
and each streams the WAL of every servicehost's cluster with pg_receivewal
through a replication slot. A slot serves one stream at a time: two
backupds on one slot would take it from each other, and neither would hold
the WAL the other received. So each Barman server of a backupd streams
through a slot named after that backupd and the server
(barmanconf.own_slot_name), created by Barman (create_slot = auto).

A Barman server an older backupd made (its directory exists, and no slot
was recorded for it) keeps the slot it streams through, named after the
server only: a new slot would leave the old one on the servicehost holding
WAL for ever, and the stream would start again from now. Which slot each
server uses is recorded in DATA/backupd/barman/slots.json the first time,
so neither a new name for this backupd nor a restart changes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roost.backups.barman import Barman, ServerConfig
from roost.backups.barmanconf import slots_for


class OwnSlotBarman(Barman):
    """Barman whose servers stream through `backupd`'s own slots."""

    def __init__(self, *args: Any, backupd: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backupd = backupd

    @property
    def slots_file(self) -> Path:
        return self.home / "slots.json"

    def _slots(self, names: Sequence[str]) -> dict[str, str]:
        try:
            known: dict[str, str] = json.loads(self.slots_file.read_text())
        except FileNotFoundError:
            known = {}
        existing = {n for n in names if n not in known and self.server_dir(n).is_dir()}
        slots = slots_for(names, self.backupd, known, existing)
        if any(known.get(n) != s for n, s in slots.items()):
            self.home.mkdir(parents=True, exist_ok=True)
            tmp = self.slots_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({**known, **slots}, indent=1, sort_keys=True))
            os.replace(tmp, self.slots_file)
        return slots

    def slots_of(self, names: Sequence[str]) -> dict[str, str]:
        return self._slots(names)

    async def ensure(self, servers: Sequence[ServerConfig]) -> None:
        slots = self._slots([s.name for s in servers])
        await super().ensure([dataclasses.replace(s, slot=slots[s.name]) for s in servers])
