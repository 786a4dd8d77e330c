"""What backupd asks of a gateway: its apps' git repositories, and putting one back.

The gateway serves these on its address-book endpoint "gateway" (authz
admits only backupd keys). RepoBundleRequest: `git bundle create - --all`
of the app's repository (an empty one, without a commit, as no bytes; app
"": the apps this gateway holds a repository of). RepoRestore: the bundle
is cloned (`clone --mirror`: index-pack checks every object's hash) into a
new directory beside the repositories, checked (`bundle verify`: a complete
history; `fsck`: every object there and sound), given the app's current key
(asked of the controllers: a repository without one would be thrown away at
the next push, git.py), then swapped in; the repository it replaces goes to
the archive (kept ROOST_ARCHIVE_DAYS). A bad bundle changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

from roost import appdirs
from roost.gateway.commands import APP
from roost.gateway.git import GitService, git_env
from roost.proc.run import run_tool
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import (
    AppKeys,
    AppKeysRequest,
    Msg,
    Ok,
    RepoBundle,
    RepoBundleRequest,
    RepoRestore,
)
from roost.wire.rpc import RemoteError, RpcTimeout

log = logging.getLogger("roost.gateway")

GIT_TIMEOUT_S = 600.0


class RepoError(Exception):
    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def _check_app(app: str) -> str:
    if not APP.match(app):
        raise RepoError(f"app name {app!r} is not valid")
    return app


async def git(*args: str, timeout: float = GIT_TIMEOUT_S) -> tuple[int, bytes, str]:
    """Run git to the end: (status, stdout, stderr)."""
    done = await run_tool(["git", *args], timeout=timeout, env=git_env())
    return done.returncode, done.stdout, done.stderr.strip()


class RepoBackups:
    def __init__(self, git_service: GitService) -> None:
        self.git = git_service

    def entries(self) -> list[Entry]:
        return [
            on(RepoBundleRequest, refusing(self.bundle, RepoError)),
            on(RepoRestore, refusing(self.restore, RepoError)),
        ]

    async def bundle(self, msg: RepoBundleRequest) -> Msg:
        if not msg.app:
            return RepoBundle(app="", apps=sorted(self.git.held()))
        app = _check_app(msg.app)
        repo = self.git.repos / f"{app}.git"
        async with self.git.lock(app):
            if not (repo / "HEAD").exists():
                raise RepoError(f"this gateway holds no repository of {app}")
            status, refs, err = await git("-C", str(repo), "for-each-ref", "--count=1")
            if status != 0:
                raise RepoError(f"cannot read the repository of {app}: {err}")
            if not refs.strip():
                return RepoBundle(app=app)  # no commit yet
            status, data, err = await git("-C", str(repo), "bundle", "create", "-", "--all")
        if status != 0:
            raise RepoError(f"git bundle of {app} failed: {err}")
        return RepoBundle(app=app, bundle=data)

    async def restore(self, msg: RepoRestore) -> Msg:
        app = _check_app(msg.app)
        if not msg.bundle:
            raise RepoError("the bundle is empty: nothing to restore (nothing changed)")
        key = await self._key(app)
        repos = self.git.repos
        tag = secrets.token_hex(4)
        bundle = repos / f".restore-{app}-{tag}.bundle"
        new = repos / f".restore-{app}-{tag}.git"
        try:
            await asyncio.to_thread(_write_private, bundle, msg.bundle)
            await self._check_out(app, bundle, new)
            appdirs.write_key(new, key)
            moved = None
            async with self.git.lock(app):
                live = repos / f"{app}.git"
                if live.exists():
                    marker = appdirs.read_key(live)
                    moved = appdirs.archive(
                        live, self.git.archive, app, marker or "", time.time(), ".git"
                    )
                os.rename(new, live)
        finally:
            bundle.unlink(missing_ok=True)
            await asyncio.to_thread(shutil.rmtree, new, True)
        log.info("%s: repository restored from a bundle; the old one is %s", app, moved or "none")
        return Ok(detail=str(moved or ""))

    async def _key(self, app: str) -> str:
        """The app's current key, from the controllers (RepoError if no such app)."""
        try:
            reply = await self.git.controllers.call(AppKeysRequest(apps=[app]), timeout=10)
        except (RpcTimeout, RemoteError) as exc:
            raise RepoError(f"cannot ask the controllers about {app}: {exc}", True) from None
        if not isinstance(reply, AppKeys) or app not in reply.keys:
            raise RepoError(f"there is no app named {app}: nothing restored")
        return reply.keys[app]

    async def _check_out(self, app: str, bundle: Path, new: Path) -> None:
        """Clone the bundle into `new` and check it (RepoError: refused)."""
        steps = (
            ("clone", ["clone", "--mirror", "--quiet", str(bundle), str(new)]),
            ("verify", ["-C", str(new), "bundle", "verify", "--quiet", str(bundle)]),
            ("fsck", ["-C", str(new), "fsck", "--no-progress", "--no-dangling"]),
            # Nothing points back at the bundle file, which goes.
            ("config", ["-C", str(new), "config", "--remove-section", "remote.origin"]),
        )
        for name, args in steps:
            status, _, err = await git(*args)
            if status != 0:
                raise RepoError(f"the bundle of {app} is refused ({name}: {err}); nothing changed")
        # A header and nothing else passes all of that as an empty repository.
        _, refs, _ = await git("-C", str(new), "for-each-ref", "--count=1")
        if not refs.strip():
            raise RepoError(f"the bundle of {app} is refused (it holds no ref); nothing changed")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
