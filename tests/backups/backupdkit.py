"""A real servicehost and backupd's real pieces around it, for the tests that
back up from one and restore into it (as tests/backups/test_host_restore.py)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from roost.backups.daemon import Backupd, build
from roost.backups.drill import Drills
from roost.backups.jobs import Repos
from roost.backups.layout import Layout
from roost.backups.locations import local_location
from roost.backups.restic import Repo
from roost.backups.sources import Pullers
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.platformsnap import PlatformFiles
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.keys import KeyPair, generate_keypair
from roost.wire.node import Node
from roost.wire.rpc import RpcServer
from tests.migrated import migrated_sqlite
from tests.servicehost.harness import Servicehost


@contextlib.asynccontextmanager
async def servicehosts_and_base(prefix: str, *hosts: Servicehost) -> AsyncIterator[Path]:
    """The servicehosts started (PostgreSQL up) and a directory for backupd
    under /tmp, searchable: the drills' scratch servers run as roost-backup.
    All removed after; the servicehosts' logs printed on failure."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o711)
    try:
        for sh in hosts:
            sh.start()
        await asyncio.gather(*(sh.wait_postgres_up() for sh in hosts))
        yield base
    except BaseException:
        for sh in hosts:
            print(sh.tail())
        raise
    finally:
        for sh in hosts:
            sh.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.asynccontextmanager
async def servicehost_and_base(prefix: str) -> AsyncIterator[tuple[Servicehost, Path]]:
    """A started servicehost (backupd's key admitted) and a directory for backupd."""
    sh = Servicehost(backupd=True)
    async with servicehosts_and_base(prefix, sh) as base:
        yield sh, base


@contextlib.asynccontextmanager
async def backupd_and_controller(
    base: Path, keys: KeyPair, servicehosts: list[Endpoint]
) -> AsyncIterator[tuple[Backupd, Store]]:
    """backupd's real pieces (its key `keys`) pulling from `servicehosts`, and
    a controller's table serving the platform snapshot over a real RPC server."""
    url = migrated_sqlite(base / "state.db")
    ctl = Store(make_engine(url))
    store = AsyncStore(ctl)
    core = Controller(store, Settings(), "c1")
    controller = ControllerService(core, None, platform=PlatformFiles(base, url))
    ctl_keys = generate_keypair()
    async with Node(ctl_keys, [keys.public]) as ctl_node:
        ctl_server = RpcServer(ctl_node, "tcp://127.0.0.1:*", controller.handle)
        cluster = ClusterConfig(
            endpoints={
                "servicehost": servicehosts,
                "controller": [Endpoint(ctl_server.address, ctl_keys.public_text)],
            }
        )
        async with Node(keys, [ctl_keys.public]) as bk_node:
            pullers = Pullers(bk_node, cluster)
            backupd = await backupd_at(Layout(base / "bk"), pullers)
            serving = asyncio.create_task(ctl_server.serve())
            try:
                yield backupd, ctl
            finally:
                await pullers.close()
                serving.cancel()
                await asyncio.wait([serving])
    await store.aclose()


async def backupd_at(layout: Layout, pullers: Pullers) -> Backupd:
    """backupd's parts with a real local restic repository and real drills."""
    layout.create()
    repos = Repos(Repo(local_location(layout), layout))
    await repos.local.init()
    return build(layout, Settings(), pullers, repos, Drills(repos.local, layout))
