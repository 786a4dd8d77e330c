"""`git push` and `git clone` against the gateway.

Theory of operation: each app has a bare repository in DATA/gateway/repos/
that is only a cache (a new gateway starts empty; the client then simply
sends every object, since the refs we advertise come from the cache). A push
runs the real `git receive-pack` on it with the channel as its stdin/stdout.
Our pre-receive hook (`roost.gateway.hook`) runs before any ref moves: it
packs the pushed main/master commit and hands it back to this daemon over a
unix socket, naming the push by a one-time token. We deploy it through the
controllers (`GatewayDeploy`, the same build path as `roost deploy`) and
stream the build log back through the hook, which git shows the client as
`remote:` lines. A failed build fails the hook, so git rejects the push and
the cache's refs stay where they were: the next push sends the same commit.

Each repository holds the key of the app it caches (`roost.appdirs`): a
command on an app whose key differs, or a repository without one, finds the
old repository moved to DATA/gateway/archive first, so a new app of a reused
name never serves or builds on a deleted app's history. Every SWEEP_S the
gateway asks the controllers for the current key of each app it caches and
archives the repositories of apps that are gone; archives older than
ROOST_ARCHIVE_DAYS are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from roost import aio, appdirs
from roost.gateway.channel import Channel
from roost.gateway.commands import GitCommand
from roost.gateway.hook import EXIT_PREFIX
from roost.gateway.identity import Identity
from roost.proc import spawn
from roost.proc.stop import signal_group
from roost.wire.messages import (
    AppKeys,
    AppKeysRequest,
    BuildAccepted,
    BuildLogChunk,
    BuildLogRequest,
    GatewayDeploy,
)
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.gateway")

MAX_SOCKET_PATH = 100
BUILD_WAIT_S = 3600.0
SWEEP_S = 600.0
GIT_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")


@dataclass(frozen=True)
class Push:
    identity: Identity
    app: str


class GitService:
    def __init__(
        self, root: Path, controllers: RpcClient, max_upload: int, name: str = "gateway"
    ) -> None:
        self.root = root
        self.repos = root / "repos"
        self.archive = root / "archive"
        self.hooks = root / "hooks"
        self.socket_path = _socket_path(root, name)
        self.controllers = controllers
        self.max_upload = max_upload
        self._pushes: dict[str, Push] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, app: str) -> asyncio.Lock:
        """Held while the app's repository is made, moved or bundled."""
        return self._locks.setdefault(app, asyncio.Lock())

    def prepare(self) -> None:
        for d in (self.root, self.repos, self.hooks):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        hook = self.hooks / "pre-receive"
        tmp = hook.with_suffix(".tmp")
        tmp.write_text(f"#!/bin/sh\nexec '{sys.executable}' -m roost.gateway.hook\n")
        tmp.chmod(0o755)
        os.replace(tmp, hook)

    async def serve_hooks(self) -> None:
        """Answer our pre-receive hooks until cancelled."""
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = await asyncio.start_unix_server(
            self._hook_connection, path=str(self.socket_path), limit=1 << 16
        )
        os.chmod(self.socket_path, 0o600)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    async def _repo(self, app: str, key: str = "") -> Path:
        """The app's repository, made if missing; one of another app (or of
        no known one) is archived first. `key` "" (an older controller): as is."""
        path = self.repos / f"{app}.git"
        lock = self.lock(app)
        async with lock:
            if key and (path / "HEAD").exists():
                marker = appdirs.read_key(path)
                if repo_is_stale(marker, key):
                    appdirs.archive(path, self.archive, app, marker or "", time.time(), ".git")
            if not (path / "HEAD").exists():
                tmp = self.repos / f".{app}.{secrets.token_hex(4)}.git"
                proc = await spawn.start(
                    ["git", "init", "--bare", "--quiet", "--initial-branch=main", str(tmp)],
                    env=git_env(), stdout=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                if await proc.wait() != 0:
                    raise RuntimeError("git init failed")
                if key:
                    appdirs.write_key(tmp, key)
                os.replace(tmp, path)
        return path

    # ------------------------------------------------------------ deleted apps

    def held(self) -> dict[str, str | None]:
        """App name -> the key in its repository (None: no key)."""
        out: dict[str, str | None] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in self.repos.iterdir():
                name = entry.name
                if name.endswith(".git") and not name.startswith("."):
                    out[name[: -len(".git")]] = appdirs.read_key(entry)
        return out

    async def sweep(self) -> list[str]:
        """Archive the repositories of apps that are gone (or reused); their names.

        Raises RpcTimeout/RemoteError when no controller answers: nothing moves.
        """
        held = self.held()
        if not held:
            return []
        reply = await self.controllers.call(AppKeysRequest(apps=sorted(held)), timeout=10)
        if not isinstance(reply, AppKeys):
            return []
        moved = []
        for app in stale_repos(held, reply.keys):
            path = self.repos / f"{app}.git"
            async with self.lock(app):
                marker = appdirs.read_key(path)
                if marker != held[app] or not path.is_dir():
                    continue  # remade meanwhile (a new app's first push): not the one judged
                try:
                    appdirs.archive(path, self.archive, app, marker or "", time.time(), ".git")
                except (OSError, appdirs.BadKey) as exc:
                    log.warning("%s: could not archive %s: %s", app, path, exc)
                    continue
            moved.append(app)
        return moved

    async def keep_tidy(self, keep_s: float) -> None:
        """Sweep and purge the archive, now and every SWEEP_S, until cancelled."""
        while True:
            try:
                await self.sweep()
            except (RpcTimeout, RemoteError) as exc:
                log.warning("could not ask the controllers which apps exist: %s", exc)
            try:
                await asyncio.to_thread(appdirs.purge, self.archive, keep_s, time.time())
            except OSError as exc:
                log.warning("could not purge %s: %s", self.archive, exc)
            await asyncio.sleep(SWEEP_S)

    # ------------------------------------------------------------ the SSH side

    async def serve(self, channel: Channel, cmd: GitCommand, who: Identity, key: str = "") -> int:
        """Run git on the app's repository; `key`: the app's, from AppGrant."""
        repo = await self._repo(cmd.app, key)
        env = git_env()
        token = ""
        if cmd.service == "receive-pack":
            token = secrets.token_urlsafe(24)
            self._pushes[token] = Push(identity=who, app=cmd.app)
            env.update(ROOST_HOOK_SOCKET=str(self.socket_path), ROOST_HOOK_TOKEN=token)
        try:
            # Its own group (all of it is killed if the client goes), dying with us.
            proc = await spawn.start(
                ["git", "-c", f"core.hooksPath={self.hooks}", cmd.service, str(repo)],
                env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                return await _pump(channel, proc)
            finally:
                if proc.returncode is None:
                    signal_group(proc.pid, signal.SIGKILL)
                    await proc.wait()
        finally:
            self._pushes.pop(token, None)

    # ------------------------------------------------------------ the hook side

    async def _hook_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        status = 1
        try:
            header = json.loads(await aio.wait_for(reader.readline(), 30))
            push = self._pushes.get(str(header.get("token", "")))
            size = int(header.get("size", 0))
            if push is None:
                writer.write(b"this push is not known to the gateway\n")
            elif size > self.max_upload:
                writer.write(f"the pushed tree is larger than {self.max_upload} bytes\n".encode())
            else:
                archive = await aio.wait_for(reader.readexactly(size), 300)
                status = await self._deploy(push, str(header.get("sha", "")), archive, writer)
        except (ValueError, TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            log.warning("pre-receive hook connection failed: %s", exc)
            with contextlib.suppress(Exception):
                writer.write(f"the gateway could not read the push: {exc}\n".encode())
        finally:
            with contextlib.suppress(Exception):
                writer.write(f"{EXIT_PREFIX}{status}\n".encode())
                await writer.drain()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _deploy(self, push: Push, sha: str, archive: bytes, out: asyncio.StreamWriter) -> int:
        async def say(line: str) -> None:
            out.write((line.rstrip("\n") + "\n").encode())
            await out.drain()

        build_id = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(4)
        await say(f"-----> deploying {push.app} at {sha[:12]} ({len(archive)} bytes)")
        try:
            reply = await self.controllers.call(
                GatewayDeploy(
                    account_id=push.identity.account_id,
                    app=push.app,
                    build_id=build_id,
                    archive=archive,
                ),
                timeout=90,
                tries=2,
            )
        except (RpcTimeout, RemoteError) as exc:
            await say(f"-----> deploy refused: {exc}")
            return 1
        if not isinstance(reply, BuildAccepted):
            await say(f"-----> unexpected answer {type(reply).__name__}")
            return 1
        log.info("%s: push by %s: build %s", push.app, push.identity.email, build_id)
        return await self._follow(push, build_id, say)

    async def _follow(self, push: Push, build_id: str, say: Any) -> int:
        after = 0
        deadline = time.monotonic() + BUILD_WAIT_S
        failures = 0
        last_line = time.monotonic()
        while time.monotonic() < deadline:
            asked = time.monotonic()
            try:
                chunk = await self.controllers.call(
                    BuildLogRequest(
                        account_id=push.identity.account_id, build_id=build_id, after_id=after
                    ),
                    timeout=10,
                )
            except (RpcTimeout, RemoteError) as exc:
                failures += 1
                if failures > 30:
                    await say(f"-----> lost track of the build: {exc}")
                    return 1
                await asyncio.sleep(1)
                continue
            failures = 0
            if not isinstance(chunk, BuildLogChunk):
                return 1
            for line in chunk.lines:
                await say(line)
            if chunk.lines:
                last_line = time.monotonic()
            after = chunk.next_after
            if chunk.final and not chunk.lines:
                if chunk.live:
                    return 0
                await say(f"-----> deploy {chunk.outcome or 'failed: see the log above'}")
                return 1
            if not chunk.lines:
                # A controller holds a poll that finds nothing until the
                # deploy ends or a poll's period passed: sleep what is left.
                now = time.monotonic()
                await asyncio.sleep(max(0.0, aio.follow_delay(now - last_line) - (now - asked)))
        await say("-----> gave up waiting for the build")
        return 1


def repo_is_stale(marker: str | None, key: str) -> bool:
    """Whether a cached repository must go before app `key` uses it. A
    repository without a key is of no known app: it is only a cache, so it
    goes too (the next push sends every object again)."""
    return appdirs.on_use(marker, key) != "keep"


def stale_repos(held: dict[str, str | None], current: dict[str, str]) -> list[str]:
    """Of the cached repositories (app -> key in it), those of apps that are
    gone, or whose name now belongs to another app (pure)."""
    return sorted(
        app for app, marker in held.items() if app not in current or marker != current[app]
    )


def _socket_path(root: Path, name: str) -> Path:
    """Where our hooks find us: one socket per gateway (several may share DATA).

    sockaddr_un holds ~100 bytes: a deep DATA dir gets a short private one.
    """
    path = root / f"hook-{name}.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    tag = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"roost-gw-{tag}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short / "hook.sock"


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in GIT_ENV_KEEP}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


async def _pump(channel: Channel, proc: asyncio.subprocess.Process) -> int:
    """Channel input -> proc stdin; proc stdout/stderr -> channel; the exit status."""
    assert proc.stdin and proc.stdout and proc.stderr

    async def inbound() -> None:
        assert proc.stdin
        try:
            while True:
                try:
                    data = await channel.read(65536)
                except (
                    asyncssh.TerminalSizeChanged,
                    asyncssh.BreakReceived,
                    asyncssh.SignalReceived,
                ):
                    continue
                if not data:
                    break
                proc.stdin.write(data)
                await proc.stdin.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(Exception):
                proc.stdin.close()

    async def outbound(src: asyncio.StreamReader, stderr: bool) -> None:
        while data := await src.read(65536):
            try:
                channel.write(data, stderr)
                await channel.drain()
            except BrokenPipeError:
                continue  # keep reading so the process is never blocked

    async with asyncio.TaskGroup() as tg:
        ins = tg.create_task(inbound())
        tg.create_task(outbound(proc.stdout, False))
        tg.create_task(outbound(proc.stderr, True))
        status = await proc.wait()
        ins.cancel()
    return status
