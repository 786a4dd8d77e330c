"""A deleted app's name, reused, starts empty on every host.

The attack: `shop` is deleted; someone creates an app named `shop` again and
reads what the old one left: its git repository on a gateway (`git clone`),
its canonical data directory on the servicehost (rsync/scp/sftp work in
`AppData.dir`, runners pull it), its home on each runner (the data copy and
files its instances wrote there), including a runner that was down while
the app was deleted.

Real code on real sockets: the controller's HTTP API (in-process ASGI) and
its wire service, the servicehost's app-data handling, the runner's app
directories and data sync, the gateway's git cache with the real `git`,
talking CURVE-encrypted ZeroMQ to each other.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from roost import appdirs
from roost.appspec.model import AppSpec
from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.gateway.git import GitService
from roost.runner.archive import AppDirs
from roost.runner.datasync import DataSync
from roost.runner.layout import Layout
from roost.servicehost.appdata import AppData
from roost.servicehost.datasession import DataSessions
from roost.servicehost.user import ServiceUser
from roost.sessions.server import ExecSessions
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import Endpoint
from roost.wire.dispatch import Handlers, on, pong
from roost.wire.keys import KeyPair, generate_keypair
from roost.wire.messages import (
    AppAccess,
    AppGrant,
    AppRemoved,
    DataArchive,
    DataPull,
    Heartbeat,
    InstanceAssignment,
    Ok,
)
from roost.wire.node import Node
from roost.wire.rpc import RpcClient, RpcServer
from tests.migrated import migrated_sqlite

WEEK = 7 * 86400.0


@dataclass
class Runner:
    layout: Layout
    dirs: AppDirs
    data: DataSync

    def assign(self, app: str, key: str) -> list[InstanceAssignment]:
        """What the heartbeat loop does with an assignment naming the app."""
        return self.dirs.claim_all(
            [
                InstanceAssignment(
                    instance_id=f"{app}-web-1",
                    app=app,
                    release=1,
                    image_digest="sha256:00",
                    process_type="web",
                    spec=AppSpec(),
                    app_key=key,
                )
            ]
        )

    def files(self, app: str) -> list[str]:
        d = self.layout.data_directory(app)
        return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []


@dataclass
class World:
    api: httpx.AsyncClient
    store: Store
    controller: Controller
    appdata: AppData
    git: GitService
    gateway: RpcClient
    servicehost: RpcClient
    online: Runner
    offline: Runner  # down while the app is deleted: never told
    account: int
    base: Path


async def _serve(node: Node, handler: object, tasks: list[asyncio.Task[None]]) -> Endpoint:
    server = RpcServer(node, "tcp://127.0.0.1:*", handler)  # type: ignore[arg-type]
    tasks.append(asyncio.create_task(server.serve()))
    return Endpoint(server.address, node.keypair.public_text)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    kps: dict[str, KeyPair] = {
        r: generate_keypair() for r in ("controller", "servicehost", "runner", "gateway")
    }
    everyone = [kp.public for kp in kps.values()]
    nodes = {r: Node(kp, everyone) for r, kp in kps.items()}
    tasks: list[asyncio.Task[None]] = []
    clients: list[RpcClient] = []
    for n in nodes.values():
        n.start()
    try:
        # The servicehost: app data, with the entries its daemon's table has.
        appdata = AppData(tmp_path / "servicehost" / "appdata")
        appdata.create()
        me = pwd.getpwuid(os.getuid())
        execs = ExecSessions(idle_s=30, grace_s=1)
        sessions = DataSessions(
            appdata, execs, ServiceUser(me.pw_name, me.pw_uid, me.pw_gid, dropped=False)
        )

        servicehost = Handlers(
            "the servicehost", [*sessions.entries(), on(AppRemoved, appdata.on_removed)]
        )
        sh_ep = await _serve(nodes["servicehost"], servicehost, tasks)

        def runner(name: str) -> Runner:
            layout = Layout(tmp_path / name)
            layout.create()
            client = RpcClient(nodes["runner"], [sh_ep])
            clients.append(client)
            return Runner(layout, AppDirs(layout, WEEK), DataSync(client, layout, 3600, list))

        online, offline = runner("runner-1"), runner("runner-2")

        runner_rpc = Handlers(
            "the runner", [on(AppRemoved, online.dirs.on_removed), pong("runner")]
        )
        runner_ep = await _serve(nodes["runner"], runner_rpc, tasks)

        # The controller: HTTP API, wire service (for the gateway), servicehost client.
        url = migrated_sqlite(tmp_path / "state.db")
        store = Store(make_engine(url))
        controller = Controller(AsyncStore(store), Settings(), "test")
        sh_client = RpcClient(nodes["controller"], [sh_ep])
        clients.append(sh_client)
        controller.services = ServiceBroker(controller.store, SecretBox(b"k" * 32), sh_client)

        def client_for(ep: Endpoint) -> RpcClient:
            return RpcClient(nodes["controller"], [ep])

        controller.client_for = client_for
        controller.soft.record(
            Heartbeat(
                host_id="runner-1",
                hostname="runner-1",
                rpc_endpoint=runner_ep.address,
                rpc_key=runner_ep.public_key,
            ),
            time.monotonic(),
        )
        service = ControllerService(controller, builders=None, client_for=client_for)
        ctl_ep = await _serve(nodes["controller"], service.handle, tasks)

        # The gateway: its git cache, asking the controller.
        gw_client = RpcClient(nodes["gateway"], [ctl_ep])
        clients.append(gw_client)
        git = GitService(tmp_path / "gateway", gw_client, 1 << 20)
        git.prepare()

        account = store.create_account("owner@example.com")
        token = store.issue_token(account)
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_api(controller, service)),
            base_url="http://controller",
            headers={"Authorization": f"Bearer {token}"},
        )
        async with api:
            yield World(
                api, store, controller, appdata, git, gw_client, sh_client,
                online, offline, account, tmp_path,
            )  # fmt: skip
        execs.shutdown()
        await controller.store.aclose()
    finally:
        for c in clients:
            await c.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for n in nodes.values():
            await n.aclose()


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd or Path.cwd())}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


async def _key(w: World, app: str) -> str:
    """The key a gateway gets with the access check of a git command."""
    grant = await w.gateway.call(AppAccess(account_id=w.account, app=app), timeout=5)
    assert isinstance(grant, AppGrant) and grant.app == app
    return grant.app_key


async def _deployed_shop(w: World) -> str:
    """App `shop` with a pushed commit, data on the servicehost, a copy on
    both runners and a file an instance wrote; its key."""
    assert (await w.api.post("/api/apps", json={"name": "shop"})).status_code == 201
    key = await _key(w, "shop")
    repo = await w.git._repo("shop", key)
    src = w.base / "src"
    src.mkdir()
    _git("init", "-q", "-b", "main", cwd=src)
    (src / "app.py").write_text("SECRET = 'the old owner'\n")
    _git("add", "-A", cwd=src)
    _git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "old", cwd=src)
    _git("push", "-q", str(repo), "main", cwd=src)
    (w.appdata.dir("shop") / "customers.csv").write_text("alice,bob\n")
    w.appdata.bump("shop")
    for r in (w.online, w.offline):
        assert r.assign("shop", key)  # claimed: the instance may start
        assert await r.data.refresh("shop")
        (r.layout.data_directory("shop") / "uploads.log").write_text("written here\n")
        assert r.files("shop") == ["customers.csv", "uploads.log"]
    return key


def _archived(root: Path, app: str, key: str) -> Path:
    found = [p for p in root.iterdir() if p.name.startswith(f"{app}.{key}.")]
    assert len(found) == 1, sorted(p.name for p in root.iterdir()) if root.exists() else root
    return found[0]


async def test_a_reused_name_starts_empty_everywhere(world: World) -> None:
    w = world
    old_key = await _deployed_shop(w)
    old_id = w.store.app("shop").id

    r = await w.api.delete("/api/apps/shop")
    assert r.status_code == 200, r.text
    assert (await w.api.post("/api/apps", json={"name": "shop"})).status_code == 201
    # A new id (never a deleted app's: migration 0008), so a new tenant uid...
    assert w.store.app("shop").id != old_id
    new_key = await _key(w, "shop")
    assert new_key != old_key  # ... the key tells the two apps apart

    # Gateway: `git clone shop` gets a new, empty repository.
    repo = await w.git._repo("shop", new_key)
    assert _git("ls-remote", str(repo)) == ""

    # Servicehost: the directory rsync/scp/sftp work in is empty, and a
    # runner's pull brings nothing.
    assert list(w.appdata.dir("shop").iterdir()) == []
    pulled = await w.servicehost.call(DataPull(app="shop"), timeout=5)
    assert isinstance(pulled, DataArchive) and pulled.version == 0

    # Runners, the one that was told and the one that was down, as the new
    # app's first instance is assigned there: an empty data directory.
    for runner in (w.online, w.offline):
        assert runner.assign("shop", new_key)
        await runner.data.refresh("shop")
        assert runner.files("shop") == []
        assert appdirs.read_key(runner.layout.app_home("shop")) == new_key

    # The old app's files are in each host's archive, for an operator.
    old_repo = _archived(w.git.archive, "shop", old_key)
    assert "refs/heads/main" in _git("ls-remote", str(old_repo))
    old_data = _archived(w.appdata.archive_root, "shop", old_key)
    assert (old_data / "customers.csv").read_text() == "alice,bob\n"
    for runner in (w.online, w.offline):
        home = _archived(runner.layout.root / "archive", "shop", old_key)
        assert (home / "data" / "uploads.log").read_text() == "written here\n"

    # New writes are the new app's alone.
    (w.appdata.dir("shop") / "fresh.txt").write_text("mine")
    w.appdata.bump("shop")
    assert await w.online.data.refresh("shop")
    assert w.online.files("shop") == ["fresh.txt"]


async def test_a_runner_that_is_up_archives_at_once(world: World) -> None:
    w = world
    old_key = await _deployed_shop(w)
    assert (await w.api.delete("/api/apps/shop")).status_code == 200
    home = _archived(w.online.layout.root / "archive", "shop", old_key)
    assert (home / "data" / "uploads.log").exists()
    # What stays is an empty home marked with the deleted key: a last write
    # of a stopping instance lands there, and is archived before reuse.
    assert sorted(p.name for p in w.online.layout.app_home("shop").iterdir()) == [appdirs.MARKER]
    assert not (w.offline.layout.root / "archive").exists()  # never told


async def test_a_late_removal_spares_the_new_app(world: World) -> None:
    w = world
    old_key = await _deployed_shop(w)
    assert (await w.api.delete("/api/apps/shop")).status_code == 200
    assert (await w.api.post("/api/apps", json={"name": "shop"})).status_code == 201
    new_key = await _key(w, "shop")
    w.online.assign("shop", new_key)
    (w.online.layout.data_directory("shop")).mkdir(exist_ok=True)
    (w.online.layout.data_directory("shop") / "new.txt").write_text("new")
    # The old app's removal, delivered again (a retry): the new app's home stays.
    assert w.online.dirs.removed("shop", old_key) is None
    assert w.online.files("shop") == ["new.txt"]
    assert await w.appdata.on_removed(AppRemoved(app="shop", app_key=old_key)) == Ok(detail="")


async def test_a_deleted_apps_repository_is_swept(world: World) -> None:
    w = world
    old_key = await _deployed_shop(w)
    keep = w.store.create_app("keep", w.account)
    keep_repo = await w.git._repo("keep", keep.key)
    assert (await w.api.delete("/api/apps/shop")).status_code == 200
    # No git command for `shop` ever comes again: the sweep finds it gone.
    assert await w.git.sweep() == ["shop"]
    assert not (w.git.repos / "shop.git").exists()
    _archived(w.git.archive, "shop", old_key)
    assert keep_repo.is_dir() and await w.git.sweep() == []


async def test_a_servicehost_that_cannot_archive_keeps_the_app(world: World) -> None:
    w = world
    await _deployed_shop(w)
    # The archive cannot be made (a file where its directory goes).
    w.appdata.archive_root.write_text("in the way")
    r = await w.api.delete("/api/apps/shop")
    assert r.status_code == 503 and "kept" in r.json()["message"], r.text
    assert w.store.app("shop").name == "shop"  # nothing was deleted
    assert (w.appdata.dir("shop") / "customers.csv").exists()
