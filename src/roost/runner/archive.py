"""This host's directories of deleted apps: archived, never inherited.

An app's home here (DATA/runner/apps/APP: its data copy, bundle configs,
the data version it pulled) belongs to one incarnation of the name, written
in a marker file (`roost.appdirs`). Before an assignment or a `run` session
of an app reaches the supervisor or the exec server, the app's home is
claimed for the key the controller sent: a home marked with another key (a
deleted app of the same name, whose removal this host missed while down) is
moved into DATA/runner/archive first, so the new app starts empty.

AppRemoved (from a controller, when the app is deleted) archives the home
at once and leaves an empty one marked with the deleted key: an instance of
the deleted app still stopping, or a last data pull, may write there by path
until the next assignment stops it, and whatever it writes is then still
the old incarnation's, archived before a new app of the name may use it.

Archives older than ROOST_ARCHIVE_DAYS are removed every PURGE_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from roost import appdirs
from roost.runner.layout import Layout
from roost.wire.messages import AppRemoved, Error, InstanceAssignment, Msg, Ok, RunStart

log = logging.getLogger("roost.runner")

PURGE_S = 3600.0

StartRun = Callable[[RunStart], Awaitable[Msg]]


class AppDirs:
    def __init__(
        self, layout: Layout, keep_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.layout = layout
        self.root: Path = layout.root / "archive"
        self.keep_s = keep_s
        self.clock = clock

    def claim(self, app: str, key: str) -> None:
        """Make the app's home the one of incarnation `key` (archiving a stale one).

        Raises appdirs.BadKey or OSError: the caller must not start the app then.
        """
        appdirs.use(self.layout.app_home(app), self.root, app, key, self.clock())

    def claim_all(self, instances: Sequence[InstanceAssignment]) -> list[InstanceAssignment]:
        """The instances whose app home is claimed; the others are left out
        (never started on a home that may hold another app's files)."""
        refused: set[str] = set()
        for app, key in sorted({(a.app, a.app_key) for a in instances}):
            try:
                self.claim(app, key)
            except (appdirs.BadKey, OSError) as exc:
                log.error("%s: not starting it here: its directory: %s", app, exc)
                refused.add(app)
        if not refused:
            return list(instances)
        return [a for a in instances if a.app not in refused]

    def removed(self, app: str, key: str) -> Path | None:
        """AppRemoved: archive the home if it is incarnation `key`'s."""
        home = self.layout.app_home(app)
        moved = appdirs.remove(home, self.root, app, key, self.clock())
        if moved is not None:
            home.mkdir(parents=True, exist_ok=True)
            appdirs.write_key(home, key)  # the tombstone: see the module docstring
        return moved

    async def on_removed(self, msg: AppRemoved) -> Msg:
        """AppRemoved, answered: the home archived (its path), or why not."""
        try:
            moved = self.removed(msg.app, msg.app_key)
        except (appdirs.BadKey, OSError) as exc:
            return Error(message=f"could not archive {msg.app}: {exc}")
        return Ok(detail=str(moved or ""))

    def claiming(self, start: StartRun) -> StartRun:
        """`start` of a `run` session, once the app's home is claimed for it."""

        async def claimed(msg: RunStart) -> Msg:
            try:
                self.claim(msg.assignment.app, msg.assignment.app_key)
            except (appdirs.BadKey, OSError) as exc:
                return Error(message=f"{msg.assignment.app}: its directory: {exc}")
            return await start(msg)

        return claimed

    async def run(self) -> None:
        """Remove expired archives, now and every PURGE_S."""
        while True:
            try:
                await asyncio.to_thread(appdirs.purge, self.root, self.keep_s, self.clock())
            except OSError as exc:
                log.warning("could not purge %s: %s", self.root, exc)
            await asyncio.sleep(PURGE_S)
