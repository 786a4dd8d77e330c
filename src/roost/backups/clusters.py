"""backupd's PostgreSQL clusters: Barman kept in step with the servicehosts,
their base backups as backups, and each app's point-in-time window.

Each servicehost with a PostgreSQL cluster is one Barman server
(roost.backups.barman), streaming WAL continuously; whenever what the
servicehosts say changes (a cluster appears, a password, a policy's
window), Barman's configuration is rewritten. A base backup is a backup
like the others in the catalog (kind "pgbase", app ""): Barman takes it,
then Barman's directory for that cluster (base backups and WAL) goes into
restic, so the offsite location holds what point-in-time recovery needs
too. Its drill is roost.backups.pitr's: Barman's own checks (every WAL
segment it needs, every file against its manifest), then a recovery to its
end into a scratch server that must check out. A point in time of one app's
database is recovered the same way (`recover`).

A new cluster on a servicehost (restored after a loss, or re-initialised)
has another system identifier, and Barman 3.4 will not go on with the old
server's history: `barman check` fails "systemid coherence" ("the system
Id of the connected PostgreSQL server changed") and so does every backup.
So backupd asks each cluster its identifier (pg_control_system()) when it
refreshes, and on a change starts a new Barman server for it (the host's
name plus "-gN", its own replication slot) and keeps the old one, retired
(nothing streams it), with its base backups and WAL: a point in time
before the change is recovered from the old server until retention
deletes it. Which cluster of a host is which is DATA/backupd/barman/
generations.json, kept in each base backup's snapshot. An app's window is
the union of its host's generations' windows; a time is recovered from the
generation whose own window holds it, and one between two is refused
(roost.backups.pitr).

A backupd away longer than the servicehost keeps WAL for its slot
(ROOST_PG_SLOT_WAL_KEEP_MB) finds the slot lost: each refresh asks, and on
one the receiver is reset to stream from now (Barman.reset_receiver), the
gap is said in the log and to the controllers (a failed pgbase event: the
point-in-time window has a gap), and a base backup is taken at once
(`rebase`, jobs.py's backup), so the window starts again from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from roost.backups import pitr
from roost.backups.barman import Barman, BarmanError, ServerConfig, advance, server_name
from roost.backups.barmanconf import inherit
from roost.backups.pgfacts import connect
from roost.backups.restore import Recovered, RestoreRefused
from roost.backups.retention import Policy, widest
from roost.backups.scratch import ScratchError
from roost.backups.sources import Pullers
from roost.backups.staging import BackupFailed, Staged
from roost.wire.messages import BackupEvent, PgSource

log = logging.getLogger("roost.backups")

# How long a list or a restore waits for the window to be brought up to now.
MARK_BUDGET_S = 3.0
# How long a refresh waits for a cluster to say its system identifier.
SYSTEMID_TIMEOUT_S = 5.0


async def systemid(source: PgSource) -> str:
    """The cluster's system identifier ("" when it cannot be asked now)."""
    try:
        async with asyncio.timeout(SYSTEMID_TIMEOUT_S):
            conn = await connect(source, "postgres", autocommit=True)
            async with conn:
                cur = await conn.execute("SELECT system_identifier FROM pg_control_system()")
                row = await cur.fetchone()
    except (psycopg.Error, TimeoutError, OSError) as exc:
        log.info("%s:%d: no system identifier now: %s", source.host, source.port, exc)
        return ""
    return str(row[0]) if row else ""


@dataclass
class Clusters:
    barman: Barman
    pullers: Pullers
    policies: Callable[[], dict[str, Policy]]
    # takes a base backup of a host's cluster now (jobs.py's, wired by the daemon)
    rebase: Callable[[str], Awaitable[object]] | None = None
    _configs: list[ServerConfig] = field(default_factory=list)
    # host -> its clusters, oldest first: (Barman server, system identifier)
    _generations: dict[str, list[tuple[str, str]]] | None = None

    @property
    def _generations_file(self) -> Path:
        return self.barman.home / "generations.json"

    def generations(self) -> dict[str, list[tuple[str, str]]]:
        if self._generations is None:
            try:
                raw = json.loads(self._generations_file.read_text())
            except FileNotFoundError:
                raw = {}
            self._generations = {h: [(s, i) for s, i in g] for h, g in raw.items()}
        return self._generations

    def current(self, host: str) -> str:
        """The Barman server of the cluster the host runs now."""
        gens = self.generations().get(host)
        return gens[-1][0] if gens else server_name(host)

    def pair_slots(self) -> list[str]:
        """The slots the current servers of servicehost pairs stream through
        (each servicehost in a pair has its Patroni keep them: pairbackup)."""
        pairs = [h for h, (_ep, src) in self.pullers.clusters().items() if src.pair]
        return sorted(self.barman.slots_of([self.current(h) for h in pairs]).values())

    def configs(self, immediate: bool = False) -> list[ServerConfig]:
        days = widest(self.policies().values())
        out = []
        for host, (_ep, source) in sorted(self.pullers.clusters().items()):
            # Which databases a cluster holds is nothing to Barman (it backs up all).
            src = msgspec.structs.replace(source, databases={})
            current = self.current(host)
            for name, _id in self.generations().get(host, []):
                if name != current:
                    out.append(ServerConfig(name, src, days, retired=True))
            out.append(ServerConfig(current, src, days, immediate_checkpoint=immediate))
        return out

    async def _see_clusters(self) -> None:
        """Ask each cluster its system identifier; a new one is a new Barman
        server (said in the log and to the controllers)."""
        gens = self.generations()
        changed, dirty = [], False
        names = self.pullers.names()
        for host, (_ep, source) in sorted(self.pullers.clusters().items()):
            sid = await systemid(source)
            old = next((n for n, ids in names.items() if host in ids), host)
            if inherit(gens, host, old, sid, len(names.get(old, [])) == 1):
                gens[host], dirty = gens.pop(old), True
                log.info("servicehost %s: its clusters were recorded as %s's", host, old)
            before = gens.get(host, [])
            after = advance(before, host, sid)
            if after == before:
                continue
            gens[host], dirty = after, True
            if len(after) > len(before) and before:
                changed.append((host, before[-1], after[-1]))
        if not dirty:
            return
        self.barman.layout.create()
        tmp = self._generations_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(gens, indent=1, sort_keys=True))
        os.replace(tmp, self._generations_file)
        for host, (old, old_id), (new, new_id) in changed:
            message = (
                f"{host} runs a new PostgreSQL cluster (system identifier {new_id}, "
                f"was {old_id}): base backups and WAL now go to Barman server {new}; "
                f"a point in time before the change is recovered from {old}, kept "
                f"until retention deletes it"
            )
            await self._say(message, ok=True)

    async def _say(self, message: str, ok: bool) -> None:
        """A change to a cluster's WAL, in the log and to the controllers."""
        log.log(logging.WARNING if ok else logging.ERROR, "%s", message)
        await self.pullers.report(BackupEvent(app="", kind="pgbase", ok=ok, message=message))

    async def ensure(self) -> None:
        """Barman's servers as the servicehosts last said (rewritten on change)."""
        await self._see_clusters()
        configs = self.configs()
        if configs != self._configs:
            await self.barman.ensure(configs)
            self._configs = configs
            log.info("Barman streams WAL of %s", [c.name for c in configs] or "no cluster")
        await self._mend_gaps()

    async def _mend_gaps(self) -> None:
        """Stream again each cluster whose slot the servicehost invalidated,
        say the gap, and start the window again with a base backup."""
        for host in sorted(self.pullers.clusters()):
            server = self.current(host)
            if server not in self.barman.servers or not await self.barman.slot_lost(server):
                continue
            at = await self.barman.reset_receiver(server)
            message = (
                f"{host}: the point-in-time window has a gap: the servicehost removed WAL "
                f"its replication slot {self.barman.slot(server)} held for Barman server "
                f"{server} before backupd received it (backupd away or behind past "
                f"ROOST_PG_SLOT_WAL_KEEP_MB, or, on a pair, further behind than the new "
                f"primary kept); WAL streams again from {at.isoformat()}, and "
                f"the window starts again at the base backup taken now"
            )
            await self._say(message, ok=False)
            if self.rebase is not None:
                await self.rebase(host)

    async def stage(self, host: str, staging: Path, reason: str) -> Staged:
        """A base backup of `host`'s cluster, and Barman's directory of it to
        keep in the repositories (relative to DATA/backupd).

        A scheduled one spreads its checkpoint (PostgreSQL paces the writes
        over minutes, so the apps hardly notice); one someone waits for (a
        capture before a change) asks for it at once, a short burst of I/O.
        """
        await self.ensure()
        server = self.current(host)
        if server not in self.barman.servers:
            raise BackupFailed(f"no PostgreSQL cluster on {host} (not heard from it)")
        hurry = reason != "scheduled"
        try:
            if hurry:  # (one pgbase per cluster at a time: jobs.py's lock)
                await self.barman.ensure(self.configs(immediate=True))
            backup_id = await self.barman.backup(server)
            info = await self.barman.backup_info(server, backup_id)
        except BarmanError as exc:
            raise BackupFailed(str(exc)) from None
        finally:
            if hurry:
                await self.barman.ensure(self._configs)
        facts: dict[str, Any] = {
            "server": server,
            "backup_id": backup_id,
            "end": info.end.timestamp() if info.end is not None else 0.0,
            "size": info.size,
        }
        # Paths the same from one base backup of the cluster to the next (the
        # facts too: not under staging/<id>/), so restic finds the last
        # snapshot of them as its parent and reads only what changed, not
        # every base backup and WAL segment again. generations.json goes
        # with them: which server was which cluster, for a restore from it;
        # and slots.json (roost.backups.slots): a backupd rebuilt from the
        # repository streams through the slots its servers had, not new ones
        # beside them that would leave the old holding WAL on the servicehost.
        root = self.barman.layout.root
        paths = [self.barman.server_dir(server)]
        for kept in (self._generations_file, self.barman.home / "slots.json"):
            if kept.exists():
                paths.append(kept)
        return Staged(
            root,
            facts,
            host,
            paths=[str(p.relative_to(root)) for p in paths],
            facts_path=str((self.barman.home / f"{server}.facts.json").relative_to(root)),
            # pg_receivewal renames its .partial segment when it fills, and
            # Barman's archiver moves finished ones to wals/: under writes a
            # file listed there is gone when restic reads it, and the backup
            # failed as partial. The backup's own WAL is in wals/ already
            # (`barman backup --wait`); what streams now is no backup's.
            exclude=[self.barman.server_dir(server) / "streaming" / "*"],
        )

    async def check(self, rec: Any) -> list[str]:
        """A base backup's drill (roost.backups.pitr): Barman's checks, then a
        recovery to its end into scratch, pg_amcheck, every database opens."""
        server, backup_id = rec.facts.get("server", ""), rec.facts.get("backup_id", "")
        if server not in self.barman.servers:
            return [f"no Barman server {server} on this backupd"]
        try:
            return await pitr.drill_base_backup(self.barman, backup_id, server)
        except BarmanError as exc:
            return [str(exc)]

    def _servers(self, app: str) -> tuple[list[str], str] | None:
        """(the Barman servers of the app's host's cluster generations, oldest
        first, the database) of the app's database (None: none)."""
        w = self.pullers.where(app)
        if w is None or w.postgres is None:
            return None
        key = w.cluster or w.host
        gens = [s for s, _ in self.generations().get(key, [])] or [self.current(key)]
        servers = [s for s in gens if s in self.barman.servers]
        return (servers, w.database) if servers else None

    async def window(self, app: str) -> tuple[float, float]:
        """The app's database's point-in-time window ((0, 0): none yet): the
        union of its cluster generations' windows (pitr.union), the newest end
        brought up to now first when the source answers at once (an empty
        commit Barman then holds: an idle database's window too reaches the
        present)."""
        found = self._servers(app)
        if found is None:
            return 0.0, 0.0
        try:
            gens = await pitr.generation_windows(self.barman, found[0], mark_within=MARK_BUDGET_S)
        except BarmanError as exc:
            log.warning("the window of %s: %s", found[0][-1], exc)
            return 0.0, 0.0
        win = pitr.union(gens)
        if win is None:
            return 0.0, 0.0
        return win.earliest.timestamp(), win.latest.timestamp()

    async def recover(self, app: str, database: str, at: datetime, scratch: Path) -> Recovered:
        """The app's database as it was at `at`, dumped, with its facts: from
        the generation of its cluster whose window holds `at`."""
        found = self._servers(app)
        if found is None:
            raise RestoreRefused(f"{app} has no database Barman streams")
        scratch.mkdir(parents=True, exist_ok=True)
        dump = scratch / "db.dump"
        try:
            facts = await pitr.recover_app_database(self.barman, found[0], database, at, dump)
        except pitr.OutsideWindow as exc:
            raise RestoreRefused(f"{exc}; nothing was changed") from None
        except (pitr.PitrError, BarmanError, ScratchError) as exc:
            raise RestoreRefused(
                f"{app} could not be recovered to {at.isoformat()}: {exc}"
            ) from None
        return Recovered(dump, facts)

    async def archive_wal(self, host: str) -> None:
        """Move the WAL streamed from `host`'s cluster into Barman's archive
        (every few minutes, schedule.py), so a recovery to a time in the day
        does not fetch the day's segments from the streaming directory one by
        one."""
        server = self.current(host)
        if server in self.barman.servers:
            await self.barman.run("archive-wal", server)

    async def maintain(self) -> list[str]:
        """Barman's retention on every cluster; the base backups it deleted."""
        gone = []
        for server in sorted(self.barman.servers):
            try:
                gone += await self.barman.maintain(server)
            except BarmanError as exc:
                log.warning("retention of %s: %s", server, exc)
        return gone
