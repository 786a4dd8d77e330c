"""The controller's side of backups: its client to every backupd, the
captures it asks for before a change, and what the dashboard and `roost
backups` show.

Theory of operation. backupd pulls and keeps the backups; the controller
only asks (`BackupCapture`, `BackupListRequest`, `BackupRestore`,
`BackupPolicySet`, `BackupHostRestore`). A platform may run several
backupds (two locations), each with its own history, so each is asked on
its own endpoint, never as a replica of another: what goes to which, and
what their answers add up to, is roost.controller.backupfan (pure). A
capture or a restore takes minutes: each is one RPC with a long timeout
(CAPTURE_TIMEOUT_S, RESTORE_TIMEOUT_S, HOST_RESTORE_TIMEOUT_S) and a
single try, answered once the backup is in that backupd's own repository
(its drill follows on backupd's side and shows in the list) or once the
restore is done or undone; a capture first pings each backupd, so one that
is down fails it in seconds, not at its timeout. A restore is never sent
twice: a timeout is reported, not retried.

Before a change that can lose data (a release of an app with services, a
service's removal, an app's deletion) the controller asks for a capture
(`before_change`). It goes on when at least one backupd took it (each that
did not is logged and reported as a platform event) and is refused, with
the reasons, when none did; with no backupd in the address book the change
goes on and the log says it was not backed up.

`health` (pure) says per app whether its backups are fine: red when, on
every backupd, the newest backup or drill of a kind failed, or none was
verified in 26 hours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from roost.controller.backupfan import Listing, best_of, captured, to_ask
from roost.wire.bootstrap import endpoint_host
from roost.wire.cluster import Endpoint
from roost.wire.messages import (
    BackupCapture,
    BackupCaptured,
    BackupEntry,
    BackupHostRestore,
    BackupHostRestored,
    BackupKind,
    BackupList,
    BackupListRequest,
    BackupPolicySet,
    BackupRestore,
    BackupRestored,
    BackupRestoresRequest,
    BackupRestoresRunning,
    Msg,
    Ok,
    Ping,
)
from roost.wire.node import Node
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.controller")

# A capture pulls, stages and stores a database dump, a Redis snapshot, a
# data directory: minutes for a big app. A restore also takes a safety
# backup first, loads and verifies.
CAPTURE_TIMEOUT_S = 1800.0
RESTORE_TIMEOUT_S = 3600.0
# A host restore restores every app of a servicehost, one after the other.
HOST_RESTORE_TIMEOUT_S = 6 * 3600.0
QUERY_TIMEOUT_S = 10.0
STALE_S = 26 * 3600.0
# The dashboard asks backupd at most this often (every replica, every viewer).
OVERVIEW_CACHE_S = 10.0
# A backupd that did not answer a listing is not asked again for this long
# (shown unreachable meanwhile): each listing would wait out its timeout.
DOWN_S = 30.0


# A platform without a backupd is a configuration, not an outage: a request
# that needs one is refused with 409 (retrying cannot help, unlike a 503),
# and the listings answer 200 with nothing in them and this message.
NOT_CONFIGURED = "no backupd is configured on this platform: nothing is backed up"


class BackupError(Exception):
    """`status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Backupd:
    name: str  # its host in the address book (what lists and events call it)
    client: RpcClient  # to its endpoint alone: it is no copy of another


# Told of each backupd that failed a capture: (app, message) -> a platform event.
Reporter = Callable[[str, str], Awaitable[None]]
T = TypeVar("T")


def backupds_of(node: Node, endpoints: Sequence[Endpoint]) -> list[Backupd]:
    """One client per backupd endpoint, named after its host (its address
    when two share a host)."""
    hosts = [endpoint_host(ep.address) for ep in endpoints]
    return [
        Backupd(h if hosts.count(h) == 1 else ep.address.split("://", 1)[-1],
                RpcClient(node, [ep]))
        for h, ep in zip(hosts, endpoints, strict=True)
    ]  # fmt: skip


class Backups:
    """The controller's client to every backupd (see roost.controller.backupfan
    for what is asked of which)."""

    def __init__(self, backupds: Sequence[Backupd] = (), report: Reporter | None = None) -> None:
        self.backupds = list(backupds)
        self.report = report
        self._overview: tuple[float, Listing] | None = None
        # backupd -> (monotonic time until which a listing skips it, why)
        self._down: dict[str, tuple[float, str]] = {}

    @property
    def configured(self) -> bool:
        return bool(self.backupds)

    def _need(self) -> list[Backupd]:
        if not self.backupds:
            raise BackupError(NOT_CONFIGURED, 409)
        return self.backupds

    def _by_name(self, name: str) -> Backupd:
        return next(b for b in self._need() if b.name == name)

    async def _call(
        self, b: Backupd, msg: Msg, timeout: float, what: str, reply: type[T], tries: int = 1
    ) -> T:
        try:
            got = await b.client.call(msg, timeout=timeout, tries=tries)
        except RemoteError as exc:
            raise BackupError(f"{what}: {exc}", 409) from None
        except RpcTimeout as exc:
            raise BackupError(f"{what}: backupd {b.name} did not answer ({exc})", 504) from None
        if not isinstance(got, reply):
            raise BackupError(f"{what}: backupd {b.name} answered {type(got).__name__}")
        return got

    async def _each(
        self, targets: Sequence[Backupd], ask: Callable[[Backupd], Awaitable[T]]
    ) -> dict[str, T | BackupError]:
        """`ask` of every target at once; each one's answer or error."""

        async def one(b: Backupd) -> T | BackupError:
            try:
                return await ask(b)
            except BackupError as exc:
                return exc

        async with asyncio.TaskGroup() as tg:
            tasks = {b.name: tg.create_task(one(b)) for b in targets}
        return {name: t.result() for name, t in tasks.items()}

    async def capture(
        self, app: str, reason: str, kinds: Iterable[BackupKind] = ()
    ) -> list[BackupEntry]:
        """Every backupd captures at once; the entries of those that did.
        BackupError only when none did; each that failed is logged and
        reported (a platform event)."""
        what = f"could not back up {app or 'the platform'}"
        msg = BackupCapture(app=app, reason=reason, kinds=list(kinds))

        async def one(b: Backupd) -> BackupCaptured:
            # A backupd that is down would hold the capture for its whole
            # timeout (half an hour): a ping says first whether it is there.
            await self._call(b, Ping(), QUERY_TIMEOUT_S, what, Ok)
            return await self._call(b, msg, CAPTURE_TIMEOUT_S, what, BackupCaptured)

        got = await self._each(self._need(), one)
        outcome = captured(
            {
                n: str(r).removeprefix(f"{what}: ") if isinstance(r, BackupError) else r.entries
                for n, r in got.items()
            }
        )
        for name, why in outcome.failures.items():
            text = f"{app or 'the platform'} ({reason}) not backed up by backupd {name}: {why}"
            log.warning("%s", text)
            if self.report is not None:
                await self.report(app, text)
        if not outcome.ok:
            status = 504 if all(_timed_out(r) for r in got.values()) else 409
            if len(got) == 1:
                raise BackupError(f"{what}: {next(iter(outcome.failures.values()))}", status)
            why = "; ".join(f"{n}: {w}" for n, w in outcome.failures.items())
            raise BackupError(f"{what} on any backupd: {why}", status)
        return outcome.entries

    async def entries(self, app: str) -> Listing:
        """What every backupd holds of `app` ("" every app), merged; one that
        does not answer is listed as unreachable (BackupError when none does)."""
        targets = self._need()
        ask, skipped = to_ask([b.name for b in targets], self._down, time.monotonic())
        what = "could not list the backups"
        tries = 2 if len(targets) == 1 else 1  # with several, the others answer meanwhile
        got = await self._each(
            [self._by_name(n) for n in ask],
            lambda b: self._call(b, BackupListRequest(app=app), QUERY_TIMEOUT_S, what,
                                 BackupList, tries),
        )  # fmt: skip
        lists: dict[str, BackupList] = {}
        unreachable = dict(skipped)
        for name, r in got.items():
            if isinstance(r, BackupError):
                unreachable[name] = str(r)
                self._down[name] = (time.monotonic() + DOWN_S, str(r))
                log.warning("backups: %s", r)
            else:
                lists[name] = r
                self._down.pop(name, None)
        if not lists:
            raise BackupError("; ".join(unreachable.values()), 504)  # none answered
        order = [b.name for b in targets]
        return Listing(
            {n: lists[n] for n in order if n in lists},
            {n: unreachable[n] for n in order if n in unreachable},
        )

    async def overview(self) -> Listing | None:
        """The platform-wide summary for the dashboard (cached briefly); None
        when no backupd is configured, or none answers (the dashboard says
        so: silence is not success)."""
        if not self.backupds:
            return None
        now = time.monotonic()
        if self._overview is not None and now - self._overview[0] < OVERVIEW_CACHE_S:
            return self._overview[1]
        try:
            listing = await self.entries("")
        except BackupError as exc:
            log.warning("backups: %s", exc)
            return None
        self._overview = (now, listing)
        return listing

    async def restore(
        self, app: str, backup_id: str, at: str, to: str, listing: Listing
    ) -> BackupRestored:
        """On the backupd that holds the backup, or whose window holds the
        time (`listing`, checked by check_restore first)."""
        target = restore_target(listing, app, backup_id, at)
        if target is None:
            raise BackupError(check_restore(listing, app, backup_id, at) or "no backupd", 422)
        msg = BackupRestore(app=app, backup_id=backup_id, at=at, to=to)
        b = self._by_name(target)
        return await self._call(b, msg, RESTORE_TIMEOUT_S, f"could not restore {app}",
                                BackupRestored)  # fmt: skip

    async def restores_running(self) -> dict[str, frozenset[str] | None]:
        """Each backupd's app restores under way (their ids), None for one
        that did not answer. One that answers with an error is there and
        runs none of them: older than the question, it never asks for a
        restore's suspension (roost.controller.restorehold)."""
        what = "which restores run"

        async def one(b: Backupd) -> frozenset[str]:
            try:
                got = await b.client.call(BackupRestoresRequest(), timeout=QUERY_TIMEOUT_S)
            except RemoteError:
                return frozenset()
            except RpcTimeout as exc:
                raise BackupError(f"{what}: backupd {b.name} did not answer ({exc})", 504) from None
            if not isinstance(got, BackupRestoresRunning):
                raise BackupError(f"{what}: backupd {b.name} answered {type(got).__name__}")
            return frozenset(got.ids)

        got = await self._each(self.backupds, one)
        return {n: None if isinstance(r, BackupError) else r for n, r in got.items()}

    async def restore_host(self, host: str) -> BackupHostRestored:
        """Every app of a servicehost that lost its data, back onto it, by the
        first backupd that has its backups: one that refuses (it has none)
        passes it to the next; one that does not answer ends it (a host
        restore is never sent twice: it may be under way)."""
        msg = BackupHostRestore(host=host)
        refusals = []
        for b in self._need():
            try:
                return await self._call(
                    b, msg, HOST_RESTORE_TIMEOUT_S, f"could not restore {host}",
                    BackupHostRestored,
                )  # fmt: skip
            except BackupError as exc:
                if exc.status != 409:
                    raise
                refusals.append(f"{b.name}: {exc}")
        raise BackupError("; ".join(refusals), 409)

    async def set_policy(self, policy: BackupPolicySet) -> None:
        """On every backupd (each applies its own retention); BackupError
        naming those that did not take it (the others did: set it again)."""
        what = "could not set the policy"
        got = await self._each(
            self._need(),
            lambda b: self._call(b, policy, QUERY_TIMEOUT_S, what, Ok, tries=2),
        )
        failed = {n: r for n, r in got.items() if isinstance(r, BackupError)}
        if failed:
            if len(got) == 1:
                raise next(iter(failed.values()))
            why = "; ".join(f"{n}: {r}" for n, r in failed.items())
            raise BackupError(f"{what} on every backupd: {why}", 409)

    async def before_change(self, app: str, reason: str) -> list[BackupEntry]:
        """A capture before a change; BackupError (refuse the change) when a
        backupd is configured and none took it; [] and a warning without one."""
        if not self.backupds:
            log.warning("%s: no backupd is configured: not backed up before %s", app, reason)
            return []
        try:
            return await self.capture(app, reason)
        except BackupError as exc:
            raise BackupError(f"{exc}; refusing to go on without a backup ({reason})") from None


def _timed_out(r: object) -> bool:
    return isinstance(r, BackupError) and r.status == 504


# ------------------------------------------------------------------ pure


def serving_again(placed: Sequence[str], states: Mapping[str, str], wanted: int) -> bool:
    """Whether an app resumed after a restore runs again: the instances
    placed for it (`placed`, their ids: the scheduler places an app's whole
    formation at once) all report `up` in `states`, or it wants none
    (`wanted`, its formation's total)."""
    return wanted <= 0 or (bool(placed) and all(states.get(i) == "up" for i in placed))


def parse_at(text: str) -> datetime:
    """An ISO 8601 time to the second (UTC unless it carries an offset)."""
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BackupError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-03-01T14:05:09Z)", 422
        ) from None
    if at.microsecond:
        raise BackupError(f"{text!r}: give the time to the second", 422)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def check_restore(listing: Listing | BackupList, app: str, backup_id: str, at: str) -> str:
    """Why this restore cannot be done as asked ("" when it can): checked
    before anything changes (the app is not even suspended)."""
    if isinstance(listing, BackupList):
        listing = Listing.of(listing)
    if bool(backup_id) == bool(at):
        return "give exactly one of a backup id and a time"
    if backup_id:
        holder = listing.holder(app, backup_id)
        if holder is None:
            return f"{app} has no backup {backup_id} (see roost backups list {app})"
        e = next(e for e in listing.lists[holder].entries if e.id == backup_id and e.app == app)
        if e.state in ("failed", "skipped"):
            return f"backup {backup_id} {e.state} ({e.message}); choose another"
        if e.kind not in ("pgdump", "redis", "data", "git"):
            return f"backup {backup_id} is a {e.kind} backup, not one of an app's"
        return ""
    when = parse_at(at).timestamp()
    if not listing.windows:
        return f"{app} has no point-in-time window (no base backup of its database yet)"
    if listing.window_holder(when) is None:
        spans = " and ".join(f"{iso(f)} to {iso(t)}" for f, t in listing.windows.values())
        return f"{at} is outside {app}'s point-in-time window ({spans}); nothing was changed"
    return ""


def restore_target(listing: Listing, app: str, backup_id: str, at: str) -> str | None:
    """The backupd to restore from: the one holding the backup, or the first
    whose point-in-time window holds the time (None: none)."""
    if backup_id:
        return listing.holder(app, backup_id)
    return listing.window_holder(parse_at(at).timestamp()) if at else None


def described(entries: Iterable[BackupEntry]) -> str:
    """What a capture did, for a deploy's output and the events: the ids
    taken, and each kind skipped with why."""
    return ", ".join(
        f"{e.kind} skipped ({e.message})" if e.state == "skipped" else e.id for e in entries
    )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Health:
    app: str  # "" for the platform's own backups
    state: str  # ok, pending (first backups being proven), stale, none, failed
    verified_at: float  # the oldest "newest verified" over its kinds (0: one has none)
    message: str

    @property
    def red(self) -> bool:
        return self.state in ("failed", "stale", "none")


# worst first: an app's state is its worst kind's
_ORDER = ("failed", "none", "stale", "pending", "ok")


def _kind_health(
    newest: BackupEntry, verified: float, first: float, now: float, stale_s: float
) -> tuple[str, str]:
    if newest.state == "failed":
        return "failed", f"{newest.kind} {newest.id}: {newest.message or 'failed'}"
    unreached = [f"{n}: {s}" for n, s in sorted(newest.locations.items()) if s != "ok"]
    if unreached:
        return "failed", f"{newest.kind} {newest.id} {'; '.join(unreached)}"
    if verified and now - verified <= stale_s:
        return "ok", ""
    if not verified:
        if now - first <= stale_s:
            return "pending", f"{newest.kind}: its first backup is being proven"
        return "none", f"{newest.kind}: never verified"
    return "stale", f"{newest.kind}: none verified in {(now - verified) / 3600:.0f} h"


def health(entries: Iterable[BackupEntry], now: float, stale_s: float = STALE_S) -> list[Health]:
    """Per app, its best backupd's health (backupfan.best_of: fine when any
    backupd is; the message names those that are not)."""
    by_backupd: dict[str, list[BackupEntry]] = {}
    for e in entries:
        by_backupd.setdefault(e.backupd, []).append(e)
    per_app: dict[str, dict[str, tuple[str, float, str]]] = {}
    for name, held in by_backupd.items():
        for h in _health_of(held, now, stale_s):
            per_app.setdefault(h.app, {})[name] = (h.state, h.verified_at, h.message)
    return [Health(app, *best_of(per)) for app, per in sorted(per_app.items())]


def _health_of(entries: Iterable[BackupEntry], now: float, stale_s: float) -> list[Health]:
    """Per app, on one backupd: red when the newest backup or drill of one of
    its kinds failed or did not reach a location, or a kind has no verified
    backup in `stale_s`; pending while a kind's first backup is being proven."""
    newest: dict[tuple[str, str], BackupEntry] = {}
    verified: dict[tuple[str, str], float] = {}
    first: dict[tuple[str, str], float] = {}
    for e in entries:
        if e.state == "skipped":
            continue  # nothing was there to back up (a repository without a commit)
        key: tuple[str, str] = (e.app, e.kind)
        if key not in newest or e.taken_at > newest[key].taken_at:
            newest[key] = e
        if e.state == "verified":
            verified[key] = max(verified.get(key, 0.0), e.taken_at)
        first[key] = min(first.get(key, e.taken_at), e.taken_at)
    by_app: dict[str, list[tuple[str, str]]] = {}
    for app_kind in sorted(newest):
        v = verified.get(app_kind, 0.0)
        kh = _kind_health(newest[app_kind], v, first[app_kind], now, stale_s)
        by_app.setdefault(app_kind[0], []).append(kh)
    out = []
    for app, states in by_app.items():
        state = min((s for s, _ in states), key=_ORDER.index)
        oldest = min(verified.get((app, k), 0.0) for a, k in newest if a == app)
        out.append(Health(app, state, oldest, "; ".join(m for _, m in states if m)))
    return out
