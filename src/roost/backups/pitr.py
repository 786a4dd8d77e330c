"""Point-in-time recovery of one app's database, and the base backup drill.

Theory of operation. Barman recovers a whole cluster, never one database:
`recover_app_database` recovers the servicehost's cluster as it was at `at`
into a scratch directory (`Barman.recover`: the base backup that ended
before `at`, the WAL after it, the streaming .partial segment included),
starts a scratch PostgreSQL on it, which replays to the first commit after
`at`, and promotes; then it dumps that one database (`pg_dump -Fc`, with its
facts, `roost.backups.pgfacts`) and throws the cluster away. The dump is
what a restore loads into the servicehost.

A servicehost's cluster may have had generations (roost.backups.clusters:
a restored or re-initialised cluster is a new Barman server, the old one
kept, retired): each has its own window, and a time is recovered from the
generation whose window holds it (`generation_for`, pure; the newest, should
two overlap). The window shown is their union (`union`); a time in a gap
between two generations is outside every window.

A time outside the windows is refused before anything is done: no scratch
directory, no dump, no change anywhere; the error names each window. Before
the windows are read, the cluster streamed now gets a mark (`Barman.mark`,
an empty commit) when it is reachable, so the window of an idle database
still reaches the present.

That recovery stopped where it was asked is read back from the timeline
history file the promotion wrote ("before <time>" for a time target,
"reached consistency" for the end of a base backup), not assumed.

`drill_base_backup` proves a base backup: Barman's check-backup (its WAL is
all there) and verify-backup (pg_verifybackup: every file against the
checksums of the backup's manifest, so flipped bytes anywhere show), then a
recovery to the end of the backup into scratch, pg_amcheck on every database
(heap and B-tree structure, indexes against their heaps), and every database
that allows connections opens. The verdict is the list of problems.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from roost.backups.barman import Barman, BarmanError, Window
from roost.backups.pgfacts import DbFacts, dump_with_facts, pg_tool, run_tool
from roost.backups.scratch import ScratchError, ScratchPg, scratch_dir, scratch_postgres

log = logging.getLogger("roost.backups.pitr")

# Replaying a day of WAL can take a while; a hung recovery must still end.
RECOVERY_READY_TIMEOUT_S = 6 * 3600.0
AMCHECK_TIMEOUT_S = 6 * 3600.0


# A generation of a host's cluster: its Barman server and its window (None:
# no complete base backup).
Generation = tuple[str, Window | None]


class OutsideWindow(ValueError):
    """A point in time the WAL and base backups Barman holds cannot reach."""

    def __init__(self, at: datetime, windows: Sequence[Generation]) -> None:
        self.at, self.windows = at, list(windows)
        when = at.astimezone(UTC).isoformat()
        if len(self.windows) == 1:
            server, window = self.windows[0]
            held = f"the window is {window}" if window else "there is no complete base backup yet"
            text = f"{when} is outside the point-in-time window of {server}: {held}"
        else:
            held = "; ".join(
                f"{server}: {window}" if window else f"{server}: no complete base backup"
                for server, window in self.windows
            )
            text = (
                f"{when} is outside the point-in-time windows of the cluster's generations ({held})"
            )
        super().__init__(text)


def generation_for(windows: Sequence[Generation], at: datetime) -> str:
    """The Barman server whose window holds `at` (`windows` oldest first; the
    newest such, should two overlap); OutsideWindow naming them all if none."""
    for server, window in reversed(windows):
        if window is not None and window.holds(at):
            return server
    raise OutsideWindow(at, windows)


def union(windows: Sequence[Generation]) -> Window | None:
    """From the earliest recoverable time of any generation to the latest
    (the times between two generations' windows are not recoverable)."""
    held = [w for _, w in windows if w is not None]
    if not held:
        return None
    return Window(min(w.earliest for w in held), max(w.latest for w in held))


class PitrError(RuntimeError):
    """The recovery ran but did not give what was asked (the message says why)."""


def _aware(at: datetime) -> datetime:
    """A naive time is UTC (as the wire's ISO 8601 times are)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def stop_reason(pgdata: Path) -> str:
    """Why recovery ended, from the newest timeline history file the promotion
    wrote: "before 2026-... UTC", "reached consistency", ... ("" if none)."""
    histories = sorted((pgdata / "pg_wal").glob("*.history"))
    if not histories:
        return ""
    lines = [ln for ln in histories[-1].read_text().splitlines() if ln.strip()]
    parts = lines[-1].split("\t", 2) if lines else []
    return parts[2].strip() if len(parts) == 3 else ""


async def generation_windows(
    barman: Barman, servers: Sequence[str], *, mark_within: float | None = None
) -> list[Generation]:
    """Each server's window, oldest first; the one streamed now (not retired)
    marked first, within `mark_within` seconds if given, so that its window
    reaches the present (an unreachable source: its window as held)."""
    out: list[Generation] = []
    for server in servers:
        if not barman.servers[server].retired:
            try:
                async with asyncio.timeout(mark_within):
                    await barman.mark(server)
            except (BarmanError, TimeoutError) as exc:
                log.info("%s: no fresh WAL mark: %s", server, exc or "out of time")
        out.append((server, await barman.window(server)))
    return out


async def recover_app_database(
    barman: Barman, servers: str | Sequence[str], dbname: str, at: datetime, dest_dump: Path
) -> DbFacts:
    """`dbname` as it was at `at`, dumped (-Fc) into `dest_dump`; its facts.
    `servers`: the cluster's Barman server, or its generations oldest first.

    Raises OutsideWindow (nothing done) when no generation's window holds `at`."""
    at = _aware(at)
    gens = await generation_windows(barman, [servers] if isinstance(servers, str) else servers)
    server = generation_for(gens, at)
    source = barman.source(server)
    run = scratch_dir(barman.layout, "pitr-")
    try:
        pgdata = run / "pgdata"
        await barman.recover(server, pgdata, target_time=at)
        async with scratch_postgres(barman.layout, pgdata=pgdata, login_as=source.user,
                                    ready_timeout=RECOVERY_READY_TIMEOUT_S) as pg:  # fmt: skip
            reason = stop_reason(pgdata)
            if not reason.startswith(("before ", "after ")):
                raise PitrError(f"recovery of {server} to {at.isoformat()} ended: {reason!r}")
            if dbname not in await _databases(pg):
                raise PitrError(f"database {dbname!r} did not exist at {at.isoformat()}")
            try:
                return await dump_with_facts(pg.conn, dbname, dest_dump)
            except BaseException:
                dest_dump.unlink(missing_ok=True)
                raise
    finally:
        shutil.rmtree(run, ignore_errors=True)


async def _databases(pg: ScratchPg) -> list[str]:
    async with await pg.connect() as c:
        cur = await c.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
        return [str(r[0]) for r in await cur.fetchall()]


async def _server_of(barman: Barman, backup_id: str) -> str:
    for server in barman.servers:
        if any(b.id == backup_id for b in await barman.backups(server)):
            return server
    raise BarmanError(f"no Barman server holds base backup {backup_id}")


async def drill_base_backup(barman: Barman, backup_id: str, server: str = "") -> list[str]:
    """Prove a base backup (see the module docstring); its problems, [] when none."""
    server = server or await _server_of(barman, backup_id)
    problems = await _barman_checks(barman, server, backup_id)
    run = scratch_dir(barman.layout, "drill-")
    try:
        pgdata = run / "pgdata"
        try:
            await barman.recover(server, pgdata, backup_id=backup_id)
        except BarmanError as exc:
            return [*problems, f"recovery failed: {exc}"]
        try:
            async with scratch_postgres(barman.layout, pgdata=pgdata,
                                        login_as=barman.source(server).user,
                                        ready_timeout=RECOVERY_READY_TIMEOUT_S) as pg:  # fmt: skip
                reason = stop_reason(pgdata)
                if reason != "reached consistency":
                    problems.append(f"recovery ended: {reason!r}, not at the backup's end")
                problems += await _amcheck(pg)
                problems += await _open_every_database(pg)
        except ScratchError as exc:
            problems.append(f"the recovered cluster did not start: {exc}")
    finally:
        shutil.rmtree(run, ignore_errors=True)
    return problems


async def _barman_checks(barman: Barman, server: str, backup_id: str) -> list[str]:
    """`barman check-backup` (the WAL the backup needs is all there: else its
    status is not DONE) and `barman verify-backup` (pg_verifybackup)."""
    problems = []
    out = await barman.run("check-backup", server, backup_id, ok=True)
    info = await barman.backup_info(server, backup_id)
    if info.status != "DONE":
        problems.append(f"base backup {backup_id} is {info.status}: {out.strip()[-500:]}")
    try:
        await barman.run("verify-backup", server, backup_id)
    except BarmanError as exc:
        problems.append(f"base backup {backup_id} does not match its manifest: {exc}")
    return problems


async def _amcheck(pg: ScratchPg) -> list[str]:
    argv = [pg_tool("pg_amcheck"), "--all", "--install-missing", "--heapallindexed",
            "--no-password"]  # fmt: skip
    status, out = await run_tool(argv, env=pg.conn.env("postgres"), timeout=AMCHECK_TIMEOUT_S)
    if status == 0:
        return []
    return [f"pg_amcheck found problems (status {status}): {out.strip()[-2000:]}"]


async def _open_every_database(pg: ScratchPg) -> list[str]:
    problems = []
    for name in await _databases(pg):
        try:
            async with await pg.connect(name) as c:
                await c.execute("SELECT count(*) FROM pg_class")
        except Exception as exc:
            problems.append(f"database {name} does not open: {exc}")
    return problems
