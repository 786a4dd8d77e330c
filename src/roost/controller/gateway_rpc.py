"""What the controller answers SSH gateways: who a key is, what it may touch,
deploys of pushed commits, their build logs, and where to run a command.

Gateways hold no state of their own that matters: every decision about an
account or an app is made here, from the state database and the soft state
rebuilt from runner heartbeats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roost import aio
from roost.controller.deployflow import Stage, outcome, stage_of
from roost.controller.runtarget import NoTarget, run_target
from roost.controller.store import AppRow, NotFound
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import (
    AccountApps,
    AppAccess,
    AppGrant,
    AppKeys,
    AppKeysRequest,
    AppNames,
    BuildAccepted,
    BuildLogChunk,
    BuildLogRequest,
    Error,
    GatewayDeploy,
    Msg,
    RunPlacement,
    SshAuth,
    SshIdentity,
)

if TYPE_CHECKING:
    from roost.controller.service import ControllerService

LOG_LINES_PER_CHUNK = 500
# How long a poll of a deploy's log that finds nothing new may wait for its end.
HOLD_S = aio.FOLLOW_FAST_S


class Refused(Exception):
    pass


class GatewayRpc:
    def __init__(self, service: ControllerService) -> None:
        self.service = service
        self.c = service.c

    def entries(self) -> list[Entry]:
        """The gateway's requests, for the controller's table; a Refused is
        answered with its reason."""
        return [
            on(SshAuth, refusing(self._auth, Refused)),
            on(AppAccess, refusing(self._access, Refused)),
            on(AppKeysRequest, refusing(self._keys, Refused)),
            on(AccountApps, refusing(self._apps, Refused)),
            on(GatewayDeploy, refusing(self._deploy, Refused)),
            on(BuildLogRequest, refusing(self._build_log, Refused)),
            on(RunPlacement, refusing(self._placement, Refused)),
        ]

    # ------------------------------------------------------------ accounts and apps

    async def _account(self, account_id: int) -> Any:
        row = await self.c.store.account_by_id(account_id)
        if row is None:
            raise Refused("unknown account")
        return row

    async def _auth(self, msg: SshAuth) -> Msg:
        row = await self.c.store.account_for_ssh_key(msg.fingerprint)
        if row is None:
            return Error(message="unknown key")
        return SshIdentity(account_id=row.id, email=row.email)

    async def _app(self, account_id: int, name: str) -> AppRow:
        """The app when the account owns it, collaborates on it, or is an admin."""
        who = await self._account(account_id)
        try:
            app = await self.c.store.app(name)
        except NotFound:
            raise Refused(f"no app named {name!r}; create it with `roost apps create`") from None
        if (
            app.owner_id != who.id
            and not who.is_admin
            and app.id not in await self.c.store.apps_visible_to(who.id)
        ):
            # The same answer as for a missing app: no hint that it exists.
            raise Refused(f"no app named {name!r}; create it with `roost apps create`")
        return app

    async def _access(self, msg: AppAccess) -> Msg:
        app = await self._app(msg.account_id, msg.app)
        return AppGrant(
            app=app.name, app_key=app.key, app_id=app.id, data_quota_mb=app.data_quota_mb
        )

    async def _apps(self, msg: AccountApps) -> Msg:
        who = await self._account(msg.account_id)
        apps = await self.c.store.apps()
        if not who.is_admin:
            visible = await self.c.store.apps_visible_to(who.id)
            apps = [a for a in apps if a.id in visible or a.owner_id == who.id]
        return AppNames(
            apps=sorted(a.name for a in apps),
            ids={a.name: a.id for a in apps},
            data_quotas={a.name: a.data_quota_mb for a in apps if a.data_quota_mb},
        )

    async def _keys(self, msg: AppKeysRequest) -> Msg:
        """The current key of each named app that exists (gateways' cache sweep:
        a name missing from the answer, or with another key, is a deleted app)."""
        wanted = set(msg.apps)
        apps = await self.c.store.apps()
        return AppKeys(keys={a.name: a.key for a in apps if a.name in wanted})

    # ------------------------------------------------------------ deploys

    async def _deploy(self, msg: GatewayDeploy) -> Msg:
        app = await self._app(msg.account_id, msg.app)
        if len(msg.archive) > self.c.settings.max_upload_bytes:
            raise Refused(
                f"the pushed tree is larger than {self.c.settings.max_upload_bytes} bytes"
            )
        try:
            await self.c.store.build(msg.build_id)
        except NotFound:
            pass
        else:  # a retried request: the build exists already
            return BuildAccepted(build_id=msg.build_id)
        await self.service.start_build(app.name, app.id, msg.build_id, msg.archive)
        return BuildAccepted(build_id=msg.build_id)

    async def _build_log(self, msg: BuildLogRequest) -> Msg:
        store = self.c.store
        try:
            build = await store.build(msg.build_id)
        except NotFound:
            raise Refused(f"no build {msg.build_id}") from None
        app = await store.app_by_id(build.app_id)
        await self._app(msg.account_id, app.name)
        chunk = await self._log_chunk(msg, app.id)
        # Nothing new: held for up to a poll's period (the gateway sleeps only
        # what is left of it) and read again when this replica ends a
        # rollout: `git push` hears "vN is live" at once, not a poll later.
        idle = not chunk.lines and not chunk.final
        if idle and await self.c.deploy_ended.wait(HOLD_S):
            chunk = await self._log_chunk(msg, app.id)
        return chunk

    async def _log_chunk(self, msg: BuildLogRequest, app_id: int) -> BuildLogChunk:
        store = self.c.store
        # The status before the lines: a deploy's closing lines are committed
        # with its final move, so lines read after a final status include
        # them. Read the other way round, a move committed between the two
        # reads ended `git push` without its "v3 is live" (as the API's
        # stream did, api/deploys.py).
        build = await store.build(msg.build_id)
        if msg.after_id == 0:
            # From 0, store.logs gives the newest lines: start from the oldest.
            rows = (await store.logs(app_id, 0, 100_000, msg.build_id))[:LOG_LINES_PER_CHUNK]
        else:
            rows = await store.logs(app_id, msg.after_id, LOG_LINES_PER_CHUNK, msg.build_id)
        stage = stage_of(build.status)
        return BuildLogChunk(
            build_id=build.id,
            lines=[r.line for r in rows],
            next_after=rows[-1].id if rows else msg.after_id,
            status=stage.value,
            error=build.error or "",
            release=build.release or 0,
            final=stage.final,
            live=stage is Stage.LIVE,
            outcome=outcome(build.status, build.error, build.release),
        )

    # ------------------------------------------------------------ run

    async def _placement(self, msg: RunPlacement) -> Msg:
        app = await self._app(msg.account_id, msg.app)
        try:
            return await run_target(self.c, app)
        except NoTarget as exc:
            raise Refused(str(exc)) from None
