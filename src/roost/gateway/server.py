"""The gateway's SSH server: public-key logins, and what each channel asked for.

Any user name is accepted (ep.io's client logs in as `vcs`): the key decides
who you are, as the controllers know it (`roost keys add`). Passwords and
keyboard-interactive logins are off. Each session channel carries one exec
request (see `roost.gateway.commands`) or the "sftp" subsystem (what scp
uses since OpenSSH 9.0), relayed to the servicehost's SFTP server, which
shows the account's apps' data directories; shells get the usage text.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

import asyncssh

from roost.gateway.channel import Channel
from roost.gateway.commands import (
    USAGE,
    CommandError,
    DataCommand,
    GitCommand,
    RunCommand,
    parse,
)
from roost.gateway.git import GitService
from roost.gateway.identity import Identity, IdentityCache
from roost.gateway.metrics import AUTH, SESSIONS
from roost.gateway.relay import ExecRelay
from roost.wire.cluster import Endpoint
from roost.wire.messages import (
    AccountApps,
    AppAccess,
    AppGrant,
    AppNames,
    DataStart,
    Msg,
    RunPlacement,
    RunStart,
    RunTarget,
    SshAuth,
    SshIdentity,
)
from roost.wire.node import Node
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.gateway")

START_TIMEOUT_S = 180.0  # a runner may first have to fetch and unpack the image


class _Login(asyncssh.SSHServer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.gateway.conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.gateway.conns.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fingerprint = key.get_fingerprint("sha256")
        try:
            who = await self.gateway.identities.identify(fingerprint)
        except (RpcTimeout, RemoteError) as exc:
            log.warning("cannot check key %s: %s", fingerprint, exc)
            AUTH.labels("unavailable").inc()
            return False
        AUTH.labels("refused" if who is None else "accepted").inc()
        if who is None:
            peer = self.conn.get_extra_info("peername") if self.conn else None
            log.info("refused unknown key %s from %s", fingerprint, peer)
            return False
        if self.conn is not None:
            self.conn.set_extra_info(roost_identity=who)
        return True

    def session_requested(self) -> Channel:
        return Channel(self.gateway.handle, self.gateway.tasks)


class Gateway:
    """Dispatch of each SSH session to git, a runner or the servicehost."""

    def __init__(
        self,
        node: Node,
        controllers: RpcClient,
        services: RpcClient | None,
        git: GitService,
    ) -> None:
        self.node = node
        self.controllers = controllers
        self.services = services
        self.git = git
        self.identities = IdentityCache(self._lookup)
        # Open connections and their sessions' tasks (ended on shutdown).
        self.conns: set[asyncssh.SSHServerConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def login_factory(self) -> Callable[[], asyncssh.SSHServer]:
        return lambda: _Login(self)

    async def close_all(self, grace: float) -> None:
        """Close every connection; wait (up to `grace`) for their sessions to
        end, which closes their exec sessions on runners and servicehosts."""
        for conn in list(self.conns):
            conn.close()
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)

    async def _lookup(self, fingerprint: str) -> Identity | None:
        try:
            reply = await self.controllers.call(SshAuth(fingerprint=fingerprint), timeout=5)
        except RemoteError:
            return None  # the controllers do not know the key
        if not isinstance(reply, SshIdentity):
            return None
        return Identity(account_id=reply.account_id, email=reply.email, fingerprint=fingerprint)

    # ------------------------------------------------------------ sessions

    async def handle(self, ch: Channel) -> None:
        who: Identity | None = ch.get_extra_info("roost_identity")
        status, signame = 1, ""
        try:
            if who is None:  # cannot happen: login requires a known key
                status = self._fail(ch, "not logged in", 255)
            elif ch.subsystem == "sftp":
                status, signame = await self._sftp(ch, who)
            elif ch.command is None:
                status = self._fail(ch, USAGE.rstrip(), 1)
            else:
                try:
                    cmd = parse(ch.command)
                except CommandError as exc:
                    status = self._fail(ch, str(exc).rstrip(), 2)
                else:
                    status, signame = await self._dispatch(ch, cmd, who)
        except (RpcTimeout, RemoteError, CommandError) as exc:
            status = self._fail(ch, str(exc), 1)
        except Exception:
            log.exception("session failed: %r", ch.command)
            status = self._fail(ch, "internal error in the gateway", 255)
        finally:
            ch.finish(status, signame)

    def _fail(self, ch: Channel, message: str, status: int) -> int:
        eol = "\r\n" if ch.term else "\n"
        try:
            ch.write(("roost: " + message.replace("\n", eol) + eol).encode(), stderr=True)
        except BrokenPipeError:
            pass
        return status

    async def _dispatch(self, ch: Channel, cmd: object, who: Identity) -> tuple[int, str]:
        kind = type(cmd).__name__.removesuffix("Command").lower()
        try:
            status, why = await self._dispatch_command(ch, cmd, who)
        except Exception:
            SESSIONS.labels(kind, "error").inc()
            raise
        SESSIONS.labels(kind, "ok" if status == 0 else "failed").inc()
        return status, why

    async def _dispatch_command(self, ch: Channel, cmd: object, who: Identity) -> tuple[int, str]:
        if isinstance(cmd, GitCommand):
            key = await self._access(who, cmd.app)
            return await self.git.serve(ch, cmd, who, key), ""
        if isinstance(cmd, RunCommand):
            return await self._run(ch, cmd, who)
        if isinstance(cmd, DataCommand):
            grant = await self._grant(who, cmd.app)
            start = DataStart(
                session=f"{cmd.tool}-{secrets.token_hex(8)}",
                app=cmd.app,
                tool=cmd.tool,
                options=cmd.options,
                paths=cmd.paths,
                app_id=grant.app_id if grant is not None else 0,
                data_quota_mb=grant.data_quota_mb if grant is not None else 0,
            )
            log.info("%s: %s by %s: %s", cmd.app, cmd.tool, who.email, ch.command)
            return await self._on_servicehost(ch, start)
        raise CommandError(f"unsupported command {cmd!r}")

    async def _access(self, who: Identity, app: str) -> str:
        """Raises RemoteError when `who` may not use `app`; the app's key."""
        grant = await self._grant(who, app)
        return grant.app_key if grant is not None else ""

    async def _grant(self, who: Identity, app: str) -> AppGrant | None:
        """Raises RemoteError when `who` may not use `app`; the grant."""
        reply = await self.controllers.call(
            AppAccess(account_id=who.account_id, app=app), timeout=5
        )
        return reply if isinstance(reply, AppGrant) else None

    async def _run(self, ch: Channel, cmd: RunCommand, who: Identity) -> tuple[int, str]:
        target = await self.controllers.call(
            RunPlacement(account_id=who.account_id, app=cmd.app), timeout=10
        )
        if not isinstance(target, RunTarget):
            return self._fail(ch, "no runner answered", 1), ""
        session = f"run-{secrets.token_hex(8)}"
        runner = RpcClient(self.node, [Endpoint(target.endpoint, target.public_key)])
        try:
            await runner.call(
                RunStart(
                    session=session,
                    assignment=target.assignment,
                    command=cmd.command,
                    kind=cmd.kind,
                    pty=ch.term is not None,
                    term=ch.term or "",
                    rows=ch.rows,
                    cols=ch.cols,
                ),
                timeout=START_TIMEOUT_S,
                tries=1,
            )
            log.info("%s: run by %s on %s: %s", cmd.app, who.email, target.host_id, cmd.command)
            return await ExecRelay(runner, session, ch).run()
        finally:
            await runner.close()

    async def _sftp(self, ch: Channel, who: Identity) -> tuple[int, str]:
        apps = await self.controllers.call(AccountApps(account_id=who.account_id), timeout=5)
        if not isinstance(apps, AppNames):
            return self._fail(ch, "could not list your apps", 1), ""
        start = DataStart(
            session=f"sftp-{secrets.token_hex(8)}",
            app="",
            tool="sftp",
            apps=apps.apps,
            app_ids=apps.ids,
            data_quotas=apps.data_quotas,
        )
        log.info("sftp by %s (%d apps)", who.email, len(apps.apps))
        return await self._on_servicehost(ch, start)

    async def _on_servicehost(self, ch: Channel, start: Msg) -> tuple[int, str]:
        if self.services is None:
            why = "this platform has no servicehost, so apps have no data directory"
            return self._fail(ch, why, 1), ""
        # The session lives on one servicehost: every request of it goes there.
        host = RpcClient(self.node, self.services.endpoints[:1])
        try:
            await host.call(start, timeout=30, tries=2)
            session = getattr(start, "session", "")
            return await ExecRelay(host, session, ch).run()
        finally:
            await host.close()
