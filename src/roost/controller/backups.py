"""The controller's side of backups: its client to backupd, the captures it
asks for before a change, and what the dashboard and `roost backups` show.

Theory of operation. backupd pulls and keeps the backups; the controller
only asks (`BackupCapture`, `BackupListRequest`, `BackupRestore`,
`BackupPolicySet`, `BackupHostRestore` to the address book's "backupd"
endpoints). A capture or a restore takes minutes: each is one RPC with a
long timeout (CAPTURE_TIMEOUT_S, RESTORE_TIMEOUT_S, HOST_RESTORE_TIMEOUT_S)
and a single try, answered once the backup is in backupd's own repository
(its drill follows on backupd's side and shows in the list) or once the
restore is done or undone. A restore is never sent twice: a timeout is
reported, not retried.

Before a change that can lose data (a release of an app with services, a
service's removal, an app's deletion) the controller asks for a capture
(`before_change`). When a backupd is configured and the capture fails, the
change is refused with the reason; with no backupd in the address book the
change goes on and the log says it was not backed up.

`health` (pure) says per app whether its backups are fine: red when the
newest backup or drill of any kind failed, or none was verified in 26 hours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

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
    Msg,
    Ok,
)
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


# A platform without a backupd is a configuration, not an outage: a request
# that needs one is refused with 409 (retrying cannot help, unlike a 503),
# and the listings answer 200 with nothing in them and this message.
NOT_CONFIGURED = "no backupd is configured on this platform: nothing is backed up"


class BackupError(Exception):
    """`status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


class Backups:
    def __init__(self, client: RpcClient | None) -> None:
        self.client = client
        self._overview: tuple[float, list[BackupEntry]] | None = None

    @property
    def configured(self) -> bool:
        return self.client is not None

    def _need(self) -> RpcClient:
        if self.client is None:
            raise BackupError(NOT_CONFIGURED, 409)
        return self.client

    async def _call(self, msg: Msg, timeout: float, what: str, tries: int = 1) -> Msg:
        try:
            return await self._need().call(msg, timeout=timeout, tries=tries)
        except RemoteError as exc:
            raise BackupError(f"{what}: {exc}", 409) from None
        except RpcTimeout as exc:
            raise BackupError(f"{what}: backupd did not answer ({exc})", 504) from None

    async def capture(
        self, app: str, reason: str, kinds: Iterable[BackupKind] = ()
    ) -> list[BackupEntry]:
        msg = BackupCapture(app=app, reason=reason, kinds=list(kinds))
        reply = await self._call(
            msg, CAPTURE_TIMEOUT_S, f"could not back up {app or 'the platform'}"
        )
        if not isinstance(reply, BackupCaptured):
            raise BackupError(f"backupd answered {type(reply).__name__} to a capture")
        failed = [e for e in reply.entries if e.state == "failed"]
        if failed:
            why = "; ".join(f"{e.kind}: {e.message}" for e in failed)
            raise BackupError(f"could not back up {app or 'the platform'}: {why}", 409)
        return reply.entries

    async def entries(self, app: str) -> BackupList:
        reply = await self._call(
            BackupListRequest(app=app), QUERY_TIMEOUT_S, "could not list the backups", tries=2
        )
        if not isinstance(reply, BackupList):
            raise BackupError(f"backupd answered {type(reply).__name__} to a list")
        return reply

    async def overview(self) -> list[BackupEntry] | None:
        """The platform-wide summary for the dashboard (cached briefly); None
        when no backupd is configured, or it does not answer (the dashboard
        says so: silence is not success)."""
        if self.client is None:
            return None
        now = time.monotonic()
        if self._overview is not None and now - self._overview[0] < OVERVIEW_CACHE_S:
            return self._overview[1]
        try:
            reply = await self.entries("")
        except BackupError as exc:
            log.warning("backups: %s", exc)
            return None
        self._overview = (now, reply.entries)
        return reply.entries

    async def restore(self, app: str, backup_id: str, at: str, to: str) -> BackupRestored:
        msg = BackupRestore(app=app, backup_id=backup_id, at=at, to=to)
        reply = await self._call(msg, RESTORE_TIMEOUT_S, f"could not restore {app}")
        if not isinstance(reply, BackupRestored):
            raise BackupError(f"backupd answered {type(reply).__name__} to a restore")
        return reply

    async def restore_host(self, host: str) -> BackupHostRestored:
        """Every app of a servicehost that lost its data, back onto it (one
        request, never repeated: a timeout is reported)."""
        msg = BackupHostRestore(host=host)
        reply = await self._call(msg, HOST_RESTORE_TIMEOUT_S, f"could not restore {host}")
        if not isinstance(reply, BackupHostRestored):
            raise BackupError(f"backupd answered {type(reply).__name__} to a host restore")
        return reply

    async def set_policy(self, policy: BackupPolicySet) -> None:
        reply = await self._call(policy, QUERY_TIMEOUT_S, "could not set the policy", tries=2)
        if not isinstance(reply, Ok):
            raise BackupError(f"backupd answered {type(reply).__name__} to a policy")

    async def before_change(self, app: str, reason: str) -> list[BackupEntry]:
        """A capture before a change; BackupError (refuse the change) when a
        backupd is configured and it failed; [] and a warning without one."""
        if self.client is None:
            log.warning("%s: no backupd is configured: not backed up before %s", app, reason)
            return []
        try:
            return await self.capture(app, reason)
        except BackupError as exc:
            raise BackupError(f"{exc}; refusing to go on without a backup ({reason})") from None


# ------------------------------------------------------------------ pure


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


def check_restore(listing: BackupList, app: str, backup_id: str, at: str) -> str:
    """Why this restore cannot be done as asked ("" when it can): checked
    before anything changes (the app is not even suspended)."""
    if bool(backup_id) == bool(at):
        return "give exactly one of a backup id and a time"
    if backup_id:
        for e in listing.entries:
            if e.id == backup_id and e.app == app:
                if e.state in ("failed", "skipped"):
                    return f"backup {backup_id} {e.state} ({e.message}); choose another"
                if e.kind not in ("pgdump", "redis", "data", "git"):
                    return f"backup {backup_id} is a {e.kind} backup, not one of an app's"
                return ""
        return f"{app} has no backup {backup_id} (see roost backups list {app})"
    when = parse_at(at).timestamp()
    if listing.pitr_from <= 0:
        return f"{app} has no point-in-time window (no base backup of its database yet)"
    if not listing.pitr_from <= when < listing.pitr_to:
        return (
            f"{at} is outside {app}'s point-in-time window "
            f"({iso(listing.pitr_from)} to {iso(listing.pitr_to)}); nothing was changed"
        )
    return ""


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
    """Per app: red when the newest backup or drill of one of its kinds
    failed or did not reach a location, or a kind has no verified backup in
    `stale_s`; pending while a kind's first backup is being proven."""
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
