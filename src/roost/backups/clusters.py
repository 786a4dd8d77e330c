"""backupd's PostgreSQL clusters: Barman kept in step with the servicehosts,
their base backups as backups, and each app's point-in-time window.

Each servicehost with a PostgreSQL cluster is one Barman server
(roost.backups.barman), streaming WAL continuously; whenever what the
servicehosts say changes (a cluster appears, a password, a policy's
window), Barman's configuration is rewritten. A base backup is a backup
like the others in the catalog (kind "pgbase", app ""): Barman takes it,
then Barman's directory for that cluster (base backups and WAL) goes into
restic, so the offsite location holds what point-in-time recovery needs
too. Its drill is Barman's own check of the backup (every WAL segment it
needs, every file against its manifest).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from roost.backups.barman import Barman, BarmanError, ServerConfig, server_name
from roost.backups.jobs import BackupFailed, Staged
from roost.backups.retention import Policy, widest
from roost.backups.sources import Pullers

log = logging.getLogger("roost.backups")


@dataclass
class Clusters:
    barman: Barman
    pullers: Pullers
    policies: Callable[[], dict[str, Policy]]
    _configs: list[ServerConfig] = field(default_factory=list)

    def configs(self) -> list[ServerConfig]:
        days = widest(self.policies().values())
        # Which databases a cluster holds is nothing to Barman (it backs up all).
        return [
            ServerConfig(
                name=server_name(host),
                source=msgspec.structs.replace(source, databases={}),
                recovery_window_days=days,
            )
            for host, (_ep, source) in sorted(self.pullers.clusters().items())
        ]

    async def ensure(self) -> None:
        """Barman's servers as the servicehosts last said (rewritten on change)."""
        configs = self.configs()
        if configs != self._configs:
            await self.barman.ensure(configs)
            self._configs = configs
            log.info("Barman streams WAL of %s", [c.name for c in configs] or "no cluster")

    async def stage(self, host: str, staging: Path) -> Staged:
        """A base backup of `host`'s cluster, and Barman's directory of it to
        keep in the repositories (relative to DATA/backupd)."""
        await self.ensure()
        server = server_name(host)
        if server not in self.barman.servers:
            raise BackupFailed(f"no PostgreSQL cluster on {host} (not heard from it)")
        try:
            backup_id = await self.barman.backup(server)
            info = await self.barman.backup_info(server, backup_id)
        except BarmanError as exc:
            raise BackupFailed(str(exc)) from None
        facts: dict[str, Any] = {
            "server": server,
            "backup_id": backup_id,
            "end": info.end.timestamp() if info.end is not None else 0.0,
            "size": info.size,
        }
        root = self.barman.layout.root
        return Staged(
            root, facts, host, paths=[str(self.barman.server_dir(server).relative_to(root))]
        )

    async def check(self, rec: Any) -> list[str]:
        """A base backup's drill: Barman's check-backup and verify-backup."""
        server, backup_id = rec.facts.get("server", ""), rec.facts.get("backup_id", "")
        if server not in self.barman.servers:
            return [f"no Barman server {server} on this backupd"]
        try:
            return await self.barman.check_backup(server, backup_id)
        except BarmanError as exc:
            return [str(exc)]

    async def window(self, app: str) -> tuple[float, float]:
        """The app's database's point-in-time window ((0, 0): none yet)."""
        w = self.pullers.where(app)
        if w is None or w.postgres is None:
            return 0.0, 0.0
        server = server_name(w.host)
        if server not in self.barman.servers:
            return 0.0, 0.0
        try:
            win = await self.barman.window(server)
        except BarmanError as exc:
            log.warning("the window of %s: %s", server, exc)
            return 0.0, 0.0
        if win is None:
            return 0.0, 0.0
        return win.earliest.timestamp(), win.latest.timestamp()

    async def maintain(self) -> list[str]:
        """Barman's retention on every cluster; the base backups it deleted."""
        gone = []
        for server in sorted(self.barman.servers):
            try:
                gone += await self.barman.maintain(server)
            except BarmanError as exc:
                log.warning("retention of %s: %s", server, exc)
        return gone
