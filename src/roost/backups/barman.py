"""PostgreSQL base backups and continuous WAL with Barman 3.4, pulled.

Theory of operation. One Barman "server" per servicehost cluster, all in one
generated configuration (`render_config`, pure) under DATA/backupd/barman,
and every command is `barman -c DATA/backupd/barman/barman.conf ...`.
backup_method=postgres (pg_basebackup over the replication protocol) and
streaming_archiver=on (pg_receivewal through a physical replication slot):
backupd pulls everything, the servicehost never runs an archive_command.
The backup role's password is in a libpq passfile (0600) the conninfo
names, so it is neither in barman.conf (which Barman parses with
%-interpolation) nor on pg_receivewal's command line, which `ps` shows.

Run as root, Barman switches to its `barman_user` (default "barman") with
setuid before doing anything (barman.utils.drop_privileges), and does nothing
when that user is the current one; it never refuses root. The "barman"
system user could not read DATA/backupd (0700), so barman_user is the user
backupd runs as.

WAL streams through pg_receivewal, which backupd runs itself as `barman
receive-wal SERVER` would, one supervised per server
(roost.backups.walstreams: restarted with backoff, strays killed before
each start, stopped with the Barman adapter, dead with backupd).

A pair's members. A pair's conninfo lists both members, and libpq waits
out its timeout (`tcp_user_timeout`, 10 s) on a first-listed member whose
host is down without a reset before it tries the next, at every one of
Barman's connections. Before each Barman command that connects to the
source (`check`, `backup`, `switch-wal`, `receive-wal`'s slot commands:
`run(connects=...)`) the members are ordered (`pgfacts.ordered_source`:
the primary first) and, when that is not the order barman.conf lists,
barman.conf is written again with it (Barman reads it at each command).
The order found is kept per server (`_orders`) while the server's members
stay the same, so `ensure` writes it too (`ordered_servers`, pure);
barman.conf is always rendered whole from that one state, with no await
between, so concurrent commands for other servers keep theirs. The
receivers are not disturbed: pg_receivewal is given its own conninfo on
its command line (`walreceiver.receive_argv`, ordered at each start) and
never reads barman.conf.

The window. The earliest recoverable time is the end of the oldest base
backup; the latest, the newest commit in the WAL Barman holds, the
streaming `.partial` segment included (roost.backups.barmanwal reads it,
and tops a recovery's WAL up with that segment). `mark()` commits an empty
transaction with an xid on the source (no data is written; the backup role
cannot write) and waits until Barman holds it: the window then reaches
"now" even for an idle database. (`barman switch-wal` is used only before
the first base backup: Barman refuses a backup while its archive is empty.)

A gap. The servicehost keeps at most ROOST_PG_SLOT_WAL_KEEP_MB of WAL for a
slot (max_slot_wal_keep_size): a backupd away longer finds its slot
invalidated ("lost") and the WAL it needs next removed, and receive-wal
can never go on. `slot_lost` says so; `reset_receiver` drops and makes the
slot again, moves receive-wal's position to the source's present
(`receive-wal --reset`) and streams from there, and records the gap's time
in the server's directory (gap.json, kept in the base backup's snapshot):
the window then starts at the first base backup that ended after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from roost.backups import barmanwal
from roost.backups.barmanconf import (
    BaseBackup,
    ServerConfig,
    Window,
    advance,
    backup_for,
    commit_times,
    generation_name,
    iso,
    kept_orders,
    ordered_servers,
    parse_check,
    parse_list_backups,
    parse_show_backup,
    passfile_line,
    render_config,
    server_name,
    slot_name,
    window_of,
)
from roost.backups.barmanwal import SEGMENT
from roost.backups.layout import Layout
from roost.backups.pgfacts import BASE_ENV, PG_BIN, connect, ordered_source, run_tool
from roost.backups.walstreams import SLOT_QUERY_TIMEOUT_S, WalStreams
from roost.privatefile import replace_private
from roost.wire.messages import PgSource

log = logging.getLogger("roost.backups.barman")

# The pure half lives in barmanconf; its names are this module's too.
__all__ = [
    "Barman", "BarmanError", "BaseBackup", "ServerConfig", "Window", "advance",
    "backup_for", "commit_times", "generation_name", "parse_check", "passfile_line",
    "render_config", "server_name", "slot_name", "window_of",
]  # fmt: skip

COMMAND_TIMEOUT_S = 300.0
# A command's temporary directory left this long is a killed daemon's (no
# command runs that long: RECOVER_TIMEOUT_S, the longest, is a day).
STALE_TMP_S = 2 * 86_400.0
BACKUP_TIMEOUT_S = 24 * 3600.0
RECOVER_TIMEOUT_S = 24 * 3600.0
MARK_TIMEOUT_S = 30.0
WAL_WAIT_S = 600.0
# How long a base backup waits for WAL streaming to be up (a receive-wal just
# started, by backupd's start or a server just made, is still connecting).
STREAM_WAIT_S = 60.0
# Barman's checks (as parse_check names them) that fail until receive-wal
# streams through the slot; with one failing, `barman backup` refuses
# ("Impossible to start the backup").
STREAMING_CHECKS = ("replication slot", "receive wal running")


class BarmanError(RuntimeError):
    """A Barman command failed (the message carries its output's tail)."""


# ------------------------------------------------------------------ the adapter


def _barman() -> str:
    return shutil.which("barman") or "/usr/bin/barman"


class Barman:
    """Barman for backupd: `async with Barman(layout) as b: await b.ensure([...])`."""

    def __init__(self, layout: Layout, *, user: str | None = None, pg_bin: Path = PG_BIN) -> None:
        self.layout = layout
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self.pg_bin = pg_bin
        self.servers: dict[str, ServerConfig] = {}
        # A pair server -> its members as barman.conf lists them, the primary
        # first as last found (`_primary_first`; kept while they are the same).
        self._orders: dict[str, str] = {}
        self.home = layout.barman
        self.config_file = self.home / "barman.conf"
        self.passfile = self.home / "pgpass"
        self.log_file = layout.logs / "barman.log"
        # One supervised pg_receivewal per server streamed.
        self.streams = WalStreams(
            self.home, self.passfile, pg_bin, source=self.source, slot=self.slot
        )

    def server_dir(self, server: str) -> Path:
        return self.home / server

    # ------------------------------------------------------------ lifetime

    def slot(self, server: str) -> str:
        """The replication slot the server streams through."""
        return self.servers[server].slot or slot_name(server)

    def slots_of(self, names: Sequence[str]) -> dict[str, str]:
        """The slot each of these servers streams (or will stream) through."""
        return {n: slot_name(n) for n in names}

    def gap_file(self, server: str) -> Path:
        return self.server_dir(server) / "gap.json"

    def gap(self, server: str) -> datetime | None:
        """When the server's WAL last had a gap (None: never)."""
        try:
            return datetime.fromtimestamp(json.loads(self.gap_file(server).read_text())["at"], UTC)
        except FileNotFoundError:
            return None

    async def __aenter__(self) -> Barman:
        self.streams.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every receive-wal (and its pg_receivewal) and return once gone."""
        await self.streams.close()

    def receiving(self, server: str) -> bool:
        """Whether the server's receive-wal is running (it may still be connecting)."""
        return self.streams.receiving(server)

    # ------------------------------------------------------------ commands

    async def run(
        self, *args: str, timeout: float = COMMAND_TIMEOUT_S, ok: bool = False, connects: str = ""
    ) -> str:
        """`barman -c CONF ARGS...`; its output. A failure raises BarmanError
        unless `ok` (then the output is returned all the same). `connects`:
        the server whose source the command connects to (a pair's primary
        listed first in barman.conf before it, `_primary_first`)."""
        if connects:
            await self._primary_first(connects)
        argv = [_barman(), "-c", str(self.config_file), *args]
        # Barman makes temporary directories (a recovery's, a backup's rsync
        # lists) in TMPDIR and removes them only when it ends its own way:
        # one killed, timed out or failed left them in /tmp for good (dozens
        # a day of the tests' runs). Each command gets one of its own here,
        # removed after it, whatever happened.
        tmp = self.temporary()
        env = {**BASE_ENV, "HOME": str(self.home), "TMPDIR": str(tmp)}
        try:
            status, out = await run_tool(argv, env=env, timeout=timeout, cwd=self.home)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if status != 0 and not ok:
            raise BarmanError(f"barman {' '.join(args)} failed (status {status}): "
                              f"{out.strip()[-2000:]}")  # fmt: skip
        return out

    def temporary(self) -> Path:
        """A new temporary directory for one command, under the home's `.tmp`
        (a dot: no server's directory is named so, `server_name`); those a
        killed daemon left (two days old) go first."""
        root = self.home / ".tmp"
        root.mkdir(mode=0o700, exist_ok=True)
        for old in root.iterdir():
            with contextlib.suppress(OSError):
                if old.lstat().st_mtime < time.time() - STALE_TMP_S:
                    shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=root))

    async def ensure(self, servers: Sequence[ServerConfig]) -> None:
        """Write the configuration, create each replication slot, and keep one
        supervised `barman receive-wal` per server (those no longer listed stop)."""
        self.layout.create()
        # A pair's order found before stands while its members are the same.
        orders = kept_orders(self._orders, servers)
        text = self._render(ordered_servers(servers, orders))
        passwords = "".join(passfile_line(s.source) + "\n" for s in servers)
        _write_private(self.passfile, passwords)
        _write_private(self.config_file, text)
        self.servers = {s.name: s for s in servers}
        self._orders = orders
        live = {s.name for s in servers if not s.retired}
        for name in sorted(self.streams.streamed - live):
            await self.streams.forget(name)
        for name in sorted(live - self.streams.streamed):
            # receive-wal creates a missing slot too (create_slot = auto): a
            # source down now is streamed once it answers.
            out = await self.run("receive-wal", "--create-slot", name, ok=True, connects=name)
            if "created" not in out and "already exists" not in out:
                log.warning("%s: no replication slot yet: %s", name, out.strip()[-500:])
            self.streams.stream(name)

    def _render(self, servers: Sequence[ServerConfig]) -> str:
        return render_config(
            home=self.home,
            log_file=self.log_file,
            user=self.user,
            passfile=self.passfile,
            servers=servers,
            pg_bin=self.pg_bin,
        )

    async def _primary_first(self, server: str) -> None:
        """barman.conf listing the server's pair members as they are found
        now, the primary first (`pgfacts.ordered_source`), before a Barman
        command connects to it: written again only when that order is not
        the one it lists. A servicehost's own PostgreSQL is left alone."""
        config = self.servers.get(server)
        if config is None or not config.source.pair:
            return
        found = (await ordered_source(config.source)).host
        # From here to the write, no await: rendered from the one state as
        # it is now (an ensure, or another server's order, meanwhile kept).
        servers = list(self.servers.values())
        orders = kept_orders({**self._orders, server: found}, servers)
        listed = ordered_servers(servers, self._orders)
        wanted = ordered_servers(servers, orders)
        if wanted == listed:
            return
        log.info("%s: barman.conf lists the members %s (the primary first)", server, found)
        _write_private(self.config_file, self._render(wanted))
        self._orders = orders

    async def slot_lost(self, server: str) -> bool:
        """Whether the source invalidated the server's slot, the WAL it held
        removed (wal_status 'lost', nothing streaming through it): receive-wal
        cannot go on from where it is. False when the source does not answer.
        Or the receiver was told the WAL it asks for is gone (a failover to
        a primary that no longer had it: the slot there is new, not lost)."""
        if self.streams.wal_gone(server):
            return True
        query = "SELECT wal_status, active FROM pg_replication_slots WHERE slot_name = %s"
        try:
            async with asyncio.timeout(SLOT_QUERY_TIMEOUT_S):
                conn = await connect(self.source(server), "postgres", autocommit=True)
                async with conn:
                    row = await (await conn.execute(query, (self.slot(server),))).fetchone()
        except (psycopg.Error, TimeoutError, OSError):
            return False
        return row is not None and row[0] == "lost" and not row[1]

    async def reset_receiver(self, server: str) -> datetime:
        """Stream the server again from the source's present after its slot
        was lost: receive-wal stopped, the slot dropped and made again, its
        position reset (`receive-wal --reset`), receive-wal started; the gap
        recorded (gap.json). Returns the gap's time."""
        streamed = server in self.streams.streamed
        if streamed:
            await self.streams.pause(server)
        await self.streams.clear_strays(server)
        await self.run("receive-wal", "--drop-slot", server, ok=True, connects=server)
        # On a servicehost pair, Patroni makes a permanent slot again by
        # itself within its loop (servicehost/pairbackup.py): there already,
        # it holds WAL from now on, as a new one would.
        out = await self.run("receive-wal", "--create-slot", server, ok=True, connects=server)
        if "created" not in out and "already exists" not in out:
            raise BarmanError(f"barman receive-wal --create-slot {server}: {out.strip()[-2000:]}")
        await self.run("receive-wal", "--reset", server, connects=server)
        at = datetime.now(UTC)
        _write_private(self.gap_file(server), json.dumps({"at": at.timestamp()}))
        if streamed:
            self.streams.resume(server)
        return at

    def source(self, server: str) -> PgSource:
        try:
            return self.servers[server].source
        except KeyError:
            raise BarmanError(
                f"no Barman server {server!r} (known: {sorted(self.servers)})"
            ) from None

    async def check(self, server: str) -> list[str]:
        """Barman's failed checks for the server ([] when all pass)."""
        out = await self.run("-f", "json", "check", server, ok=True, connects=server)
        return parse_check(out, server)

    async def backups(self, server: str) -> list[BaseBackup]:
        """Every base backup of the server, oldest first (end times to the second)."""
        return parse_list_backups(await self.run("-f", "json", "list-backups", server), server)

    async def backup_info(self, server: str, backup_id: str) -> BaseBackup:
        """One base backup, with its exact end time."""
        return parse_show_backup(
            await self.run("-f", "json", "show-backup", server, backup_id), server
        )

    async def backup(self, server: str, timeout: float = BACKUP_TIMEOUT_S) -> str:
        """Take a base backup and wait until the WAL it needs is archived; its id."""
        if not self._archived_wal(server):
            await self.switch_wal(server)
        await self.streaming(server)
        # Barman keeps each backup in base/<id>: what is there now is not new
        # (read from the directory, not with another barman command).
        base = self.server_dir(server) / "base"
        before = {p.name for p in base.iterdir()} if base.is_dir() else set()
        # --wait: until the WAL the backup needs is archived (not forever: a
        # stalled receive-wal then fails the backup instead of hanging it).
        await self.run("backup", "--wait", "--wait-timeout", str(int(WAL_WAIT_S)), server,
                       timeout=timeout, connects=server)  # fmt: skip
        new = [b for b in await self.backups(server) if b.id not in before]
        if not new:
            raise BarmanError(f"barman backup {server} reported success but made no backup")
        if new[-1].status != "DONE":
            raise BarmanError(f"base backup {new[-1].id} of {server} is {new[-1].status}")
        return new[-1].id

    async def streaming(self, server: str, within: float = STREAM_WAIT_S) -> None:
        """Return once receive-wal streams through the server's slot (Barman's
        own checks say so), waiting up to `within` seconds; else BarmanError
        saying which checks failed and what receive-wal last said."""
        deadline = time.monotonic() + within
        while True:
            failing = await self.check(server)
            if not any(c.startswith(STREAMING_CHECKS) for c in failing):
                return
            if time.monotonic() >= deadline:
                # Every failed check: a source that is down says why here.
                raise BarmanError(
                    f"{server}: WAL streaming was not up within {within:g}s, so no base "
                    f"backup was started (Barman's failed checks: {'; '.join(failing)}; "
                    f"receive-wal {'runs' if self.receiving(server) else 'is not running'}: "
                    f"{self.streams.why(server)})"
                )
            await asyncio.sleep(1.0)

    def _archived_wal(self, server: str) -> bool:
        xlogdb = self.server_dir(server) / "wals" / "xlog.db"
        return xlogdb.exists() and xlogdb.stat().st_size > 0

    async def switch_wal(self, server: str) -> None:
        """Close the source's current WAL segment and archive it (Barman needs one
        archived segment before its first backup). Needs the source alive."""
        streaming = self.server_dir(server) / "streaming"
        try:
            async with asyncio.timeout(MARK_TIMEOUT_S):
                # pg_receivewal must stream first: started later, it would begin
                # at the segment after the one switched, and nothing is archived.
                while not any(streaming.glob("*.partial")):
                    await asyncio.sleep(0.1)
                await self.mark(server, wait=False)
                await self.run("switch-wal", server, connects=server)
                # Barman archives a streamed segment once the next one has
                # begun: write a little WAL, and wait for the next .partial.
                while True:
                    await self.mark(server, wait=False)
                    complete = [p.name for p in streaming.glob("*") if SEGMENT.match(p.name)]
                    partial = [p.name[:24] for p in streaming.glob("*.partial")]
                    if complete and partial and max(partial) > max(complete):
                        break
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise BarmanError(
                f"{server}: no WAL streamed within {MARK_TIMEOUT_S:g}s ({self.streams.why(server)})"
            ) from None
        await self.run("archive-wal", server)

    async def maintain(self, server: str) -> list[str]:
        """Archive streamed WAL and apply the retention policy (what `barman cron`
        does, without it starting a receive-wal of its own); the deleted ids."""
        await self.run("archive-wal", server)
        deleted = []
        for b in await self.backups(server):
            if b.retention == "OBSOLETE":
                await self.run("delete", server, b.id)
                deleted.append(b.id)
        return deleted

    # ------------------------------------------------------------ the window

    async def last_commit(self, server: str) -> datetime | None:
        """The newest commit (or abort) time in the WAL Barman holds."""
        try:
            return await barmanwal.last_commit(self.server_dir(server), self.pg_bin)
        except barmanwal.WalMoving as exc:
            raise BarmanError(str(exc)) from None

    async def window(self, server: str) -> Window | None:
        """(earliest, latest) recoverable times; None without a complete base
        backup (since the last gap in the WAL: none before it reaches past it)."""
        done = [b for b in await self.backups(server) if b.status == "DONE"]
        gap = self.gap(server)
        for b in done:
            oldest = await self.backup_info(server, b.id)
            if gap is None or (oldest.end is not None and oldest.end > gap):
                return window_of([oldest], await self.last_commit(server))
        return None

    async def mark(self, server: str, wait: bool = True) -> datetime | None:
        """Commit an empty transaction on the source (no data: an xid and its
        commit record) and, with `wait`, return once Barman holds it: the window
        then reaches now. None when the source cannot be reached."""
        try:
            conn = await connect(self.source(server), "postgres")
        except psycopg.OperationalError as exc:
            log.info("%s: source not reachable for a WAL mark: %s", server, exc)
            return None
        async with conn:
            cur = await conn.execute("SELECT pg_current_xact_id(), now()")
            row = await cur.fetchone()
            await conn.commit()
        started: datetime = row[1] if row else datetime.now(UTC)
        if not wait:
            return started
        try:
            async with asyncio.timeout(MARK_TIMEOUT_S):
                while (last := await self.last_commit(server)) is None or last < started:
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise BarmanError(
                f"{server}: WAL streaming did not catch up within {MARK_TIMEOUT_S:g}s "
                f"({self.streams.why(server)})"
            ) from None
        return last

    # ------------------------------------------------------------ recovery

    async def recover(
        self,
        server: str,
        dest: Path,
        *,
        backup_id: str = "",
        target_time: datetime | None = None,
    ) -> str:
        """Recover the cluster into `dest` (a new directory) so that a postgres
        started there replays to the target and promotes: `target_time`, or
        without one the end of `backup_id` (consistency). Returns the base
        backup used. The caller checks the target is in the window."""
        if backup_id:
            chosen = backup_id  # one Barman does not know makes `barman recover` fail
        elif target_time is not None:
            chosen = (await self._backup_for(server, target_time)).id
        else:
            raise ValueError("recover needs a backup id or a target time")
        args = ["recover", "--target-action", "promote"]
        if target_time is not None:
            args += ["--target-time", iso(target_time)]
        else:
            args += ["--target-immediate"]
        await self.run(*args, server, chosen, str(dest), timeout=RECOVER_TIMEOUT_S)
        if target_time is not None:
            await self._top_up(server, dest / "barman_wal", target_time)
        return chosen

    async def _backup_for(self, server: str, at: datetime) -> BaseBackup:
        # list-backups gives whole seconds: check candidates with exact times.
        for b in reversed(await self.backups(server)):
            if b.status != "DONE" or b.end is None or b.end > at:
                continue
            exact = await self.backup_info(server, b.id)
            if backup_for([exact], at) is not None:
                return exact
        raise BarmanError(f"no base backup of {server} ended by {iso(at)}")

    async def _top_up(self, server: str, wal_dir: Path, target: datetime) -> None:
        """The recovery's WAL, up to a commit after the target (barmanwal.top_up)."""

        async def get_wal(name: str, into: Path) -> None:
            await self.run("get-wal", "-P", "-o", str(into), server, name)

        await barmanwal.top_up(self.server_dir(server), wal_dir, target, get_wal, self.pg_bin)


def _write_private(path: Path, text: str) -> None:
    replace_private(path, text)
