"""Each role's {message type: handler} table against the flow table.

`roost.wire.authz.FLOWS` says, per request type, who may send it and who
serves it; every serving role dispatches through a `roost.wire.dispatch`
table. They must agree: a type a role lists but nobody may send it is dead
code, a type it must serve but does not list is answered "does not handle".
The tables are built from the roles' own parts, as their daemons build them.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from roost.backups.daemon import build as backupd_build
from roost.backups.drill import Drills
from roost.backups.jobs import Repos
from roost.backups.layout import Layout as BackupsLayout
from roost.backups.locations import local_location
from roost.backups.restic import Repo
from roost.backups.sources import Pullers
from roost.builder.daemon import builder_handlers, images_handlers
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.gateway.daemon import handlers as gateway_handlers
from roost.gateway.git import GitService
from roost.images.store import ImageStore
from roost.runner.archive import AppDirs
from roost.runner.layout import Layout as RunnerLayout
from roost.runner.rpcserver import RunnerRpc
from roost.servicehost.appdata import AppData
from roost.servicehost.binaries import Binaries
from roost.servicehost.daemon import handlers as servicehost_handlers
from roost.servicehost.datasession import DataSessions
from roost.servicehost.host import ServiceError, ServiceHost
from roost.servicehost.layout import Layout as ServicehostLayout
from roost.servicehost.user import ServiceUser
from roost.sessions.server import ExecSessions
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.authz import FLOWS
from roost.wire.cluster import ClusterConfig
from roost.wire.dispatch import Handlers, on, pong, refusing
from roost.wire.identity import ROLES
from roost.wire.keys import generate_keypair
from roost.wire.messages import Error, HeartbeatReply, Msg, Ok, Ping, ServiceBackup
from roost.wire.node import Node
from tests.migrated import migrated_sqlite

# A role's tables, built in a directory; what they hold open is closed by the stack.
Tables = Callable[[Path, AsyncExitStack], list[Handlers]]


def _controller(tmp: Path, stack: AsyncExitStack) -> list[Handlers]:
    url = migrated_sqlite(tmp / "state.db")
    store = AsyncStore(Store(make_engine(url)))
    stack.push_async_callback(store.aclose)
    return [ControllerService(Controller(store, Settings(), "c1"), builders=None).handle]


def _runner(tmp: Path, _stack: AsyncExitStack) -> list[Handlers]:
    layout = RunnerLayout(tmp / "runner")
    rpc = RunnerRpc(layout, images=None, sessions=ExecSessions())  # type: ignore[arg-type]
    return [rpc.handlers(AppDirs(layout, 3600))]


def _builder(tmp: Path, _stack: AsyncExitStack) -> list[Handlers]:
    # The build manager is only called by the BuildRequest entry, never here.
    return [builder_handlers(None), images_handlers(ImageStore(tmp / "store"))]  # type: ignore[arg-type]


def _servicehost(tmp: Path, _stack: AsyncExitStack) -> list[Handlers]:
    me = pwd.getpwuid(os.getuid())
    user = ServiceUser(me.pw_name, me.pw_uid, me.pw_gid, dropped=False)
    bins = Binaries(pg_bin=tmp / "pg", redis_server=tmp / "redis-server")
    host = ServiceHost(ServicehostLayout(tmp), Settings(), bins, user)
    appdata = AppData(tmp / "appdata")
    return [servicehost_handlers(host, appdata, DataSessions(appdata, ExecSessions(), user))]


def _backupd(tmp: Path, stack: AsyncExitStack) -> list[Handlers]:
    # Nothing is asked of the sources or the repository while building it.
    layout = BackupsLayout(tmp)
    node = Node(generate_keypair(), [])
    stack.callback(node.close)
    pullers = Pullers(node, ClusterConfig())
    repos = Repos(Repo(local_location(layout), layout))
    return [
        backupd_build(layout, Settings(), pullers, repos, Drills(repos.local, layout)).handlers()
    ]


def _gateway(tmp: Path, _stack: AsyncExitStack) -> list[Handlers]:
    # The controllers are asked only when a repository is restored.
    return [gateway_handlers(GitService(tmp / "gateway", None, 1 << 20))]  # type: ignore[arg-type]


# role -> its tables (a role serving none has none: the router)
TABLES: dict[str, Tables] = {
    "controller": _controller,
    "runner": _runner,
    "builder": _builder,
    "servicehost": _servicehost,
    "gateway": _gateway,
    "backupd": _backupd,
}


@pytest.mark.parametrize("role", ROLES)
async def test_a_roles_table_lists_exactly_what_the_flow_table_sends_it(
    role: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        tables = TABLES[role](tmp_path, stack) if role in TABLES else []
        listed = frozenset().union(*(t.kinds for t in tables))
        served = {kind for kind, flow in FLOWS.items() if role in flow.to}
        assert {k.__name__ for k in listed} == {k.__name__ for k in served}
        for table in tables:  # and a message off its table is refused by name
            reply = await table(HeartbeatReply())
            assert reply == Error(message=f"{table.who} does not handle HeartbeatReply")


def test_every_request_is_served_by_some_role() -> None:
    assert all(flow.to and flow.by for flow in FLOWS.values())
    assert set().union(*(flow.to for flow in FLOWS.values())) <= set(ROLES)


async def test_a_table_dispatches_by_exact_type_and_refuses_doubles() -> None:
    async def backup(msg: ServiceBackup) -> Msg:
        if msg.kind == "redis":
            raise ServiceError("not up", retryable=True)
        raise ValueError("a bug")

    table = Handlers("a host", [pong("here"), on(ServiceBackup, refusing(backup, ServiceError))])
    assert await table(Ping()) == Ok(detail="here")
    assert await table(ServiceBackup(app="a", kind="redis")) == Error(
        message="not up", retryable=True
    )
    with pytest.raises(ValueError, match="a bug"):  # not a refusal: the RPC server's to log
        await table(ServiceBackup(app="a", kind="postgres"))
    with pytest.raises(ValueError, match="two handlers for Ping"):
        Handlers("a host", [pong("here"), pong("again")])
