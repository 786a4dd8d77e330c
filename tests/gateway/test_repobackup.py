"""The gateway's RPC side for backupd, over real CURVE sockets with real keys,
a real controller (its table on a SQLite state database) and real git:
bundles of the repositories, a restore that swaps in a checked copy and keeps
the old one, a bad bundle refused with nothing changed, and only backupd
may ask."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roost import appdirs
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.gateway.daemon import handlers
from roost.gateway.git import GitService
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import Endpoint
from roost.wire.identity import Identity, identity
from roost.wire.keys import KeyPair, generate_keypair
from roost.wire.messages import Msg, Ok, RepoBundle, RepoBundleRequest, RepoRestore
from roost.wire.node import Node
from roost.wire.rpc import RemoteError, RpcClient, RpcServer
from tests.migrated import migrated_sqlite


@dataclass
class World:
    git: GitService
    store: Store
    endpoint: Endpoint
    keys: dict[str, KeyPair]
    peers: dict[bytes, Identity]
    work: Path

    async def ask(self, msg: Msg, role: str = "backupd") -> Msg:
        async with Node(self.keys[role], self.peers) as node:
            client = RpcClient(node, [self.endpoint])
            try:
                return await client.call(msg, timeout=60, tries=1)
            finally:
                await client.close()

    def push(self, app: str, *messages: str) -> Path:
        """Commits pushed straight into the gateway's repository of `app`."""
        repo = self.git.repos / f"{app}.git"
        if not repo.exists():
            _git("init", "--bare", "--quiet", "--initial-branch=main", str(repo))
            appdirs.write_key(repo, self.store.app(app).key)
        work = self.work / f"w-{app}"
        if not work.exists():
            _git("init", "--quiet", "--initial-branch=main", str(work))
        for m in messages:
            (work / "f.txt").write_text(m)
            _git("-C", str(work), "add", "f.txt")
            _git("-C", str(work), "commit", "--quiet", "-m", m)
        _git("-C", str(work), "push", "--quiet", str(repo), "main")
        return repo


def _git(*args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    return subprocess.run(
        ["git", *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def _log(repo: Path) -> list[str]:
    return _git("-C", str(repo), "log", "--format=%s", "main").split()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    keys = {r: generate_keypair() for r in ("controller", "gateway", "backupd", "runner")}
    peers = {k.public: identity(r, "local") for r, k in keys.items()}
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    owner = store.create_account_hashed("o@example.com")
    store.create_app("shop", owner)
    store.create_app("empty", owner)
    service = ControllerService(Controller(AsyncStore(store), Settings(), "c1"), None)
    async with Node(keys["controller"], peers) as cn, Node(keys["gateway"], peers) as gn:
        ctl = RpcServer(cn, "tcp://127.0.0.1:*", service.handle)
        controllers = RpcClient(gn, [Endpoint(ctl.address, keys["controller"].public_text)])
        git = GitService(tmp_path / "gateway", controllers, 1 << 20)
        git.prepare()
        gw = RpcServer(gn, "tcp://127.0.0.1:*", handlers(git))
        tasks = [asyncio.create_task(ctl.serve()), asyncio.create_task(gw.serve())]
        try:
            yield World(git, store, Endpoint(gw.address, keys["gateway"].public_text), keys,
                        peers, tmp_path)  # fmt: skip
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await controllers.close()
            service.c.store.close()


async def test_the_repositories_are_listed_and_bundled(world: World) -> None:
    world.push("shop", "one", "two")
    _git("init", "--bare", "--quiet", str(world.git.repos / "empty.git"))
    listed = await world.ask(RepoBundleRequest())
    assert listed == RepoBundle(app="", apps=["empty", "shop"])
    assert await world.ask(RepoBundleRequest(app="empty")) == RepoBundle(app="empty")
    got = await world.ask(RepoBundleRequest(app="shop"))
    assert isinstance(got, RepoBundle) and got.bundle
    bundle = world.work / "shop.bundle"
    bundle.write_bytes(got.bundle)
    clone = world.work / "clone"
    _git("clone", "--quiet", str(bundle), str(clone))
    assert _log(clone) == ["two", "one"]
    with pytest.raises(RemoteError, match="no repository of nope"):
        await world.ask(RepoBundleRequest(app="nope"))
    with pytest.raises(RemoteError, match="not valid"):
        await world.ask(RepoBundleRequest(app="../etc"))


async def test_a_restore_swaps_in_a_checked_copy_and_keeps_the_old(world: World) -> None:
    repo = world.push("shop", "one")
    saved = await world.ask(RepoBundleRequest(app="shop"))
    assert isinstance(saved, RepoBundle)
    world.push("shop", "two", "three")
    done = await world.ask(RepoRestore(app="shop", bundle=saved.bundle))
    assert isinstance(done, Ok)
    assert _log(repo) == ["one"]
    assert appdirs.read_key(repo) == world.store.app("shop").key  # kept at the next push
    assert "remote" not in _git("-C", str(repo), "config", "--list")
    kept = Path(done.detail)
    assert kept.parent == world.git.archive and _log(kept) == ["three", "two", "one"]
    # The gateway's next use of it keeps it (its key is the app's).
    assert await world.git._repo("shop", world.store.app("shop").key) == repo
    assert _log(repo) == ["one"]


async def test_a_bad_bundle_changes_nothing(world: World) -> None:
    repo = world.push("shop", "one")
    good = await world.ask(RepoBundleRequest(app="shop"))
    assert isinstance(good, RepoBundle)
    flipped = bytearray(good.bundle)
    flipped[-40] ^= 0xFF  # a byte of the pack
    for bad, why in ((bytes(flipped), "refused"), (b"# v2 git bundle\ngarbage", "refused"),
                     (b"", "empty")):  # fmt: skip
        with pytest.raises(RemoteError, match=why):
            await world.ask(RepoRestore(app="shop", bundle=bad))
    assert _log(repo) == ["one"]
    assert not world.git.archive.exists() or not any(world.git.archive.iterdir())
    assert sorted(p.name for p in world.git.repos.iterdir()) == ["shop.git"]
    with pytest.raises(RemoteError, match="no app named ghost"):
        await world.ask(RepoRestore(app="ghost", bundle=good.bundle))
    assert not (world.git.repos / "ghost.git").exists()


async def test_only_backupd_may_ask(world: World) -> None:
    repo = world.push("shop", "one")
    other = world.push("empty", "x")
    theirs = await world.ask(RepoBundleRequest(app="empty"))
    assert isinstance(theirs, RepoBundle)
    for role in ("runner", "controller"):
        for msg in (RepoBundleRequest(app="shop"), RepoRestore(app="shop", bundle=theirs.bundle)):
            with pytest.raises(RemoteError, match=f"may not send {type(msg).__name__}"):
                await world.ask(msg, role)
    assert _log(repo) == ["one"] and _log(other) == ["x"]
