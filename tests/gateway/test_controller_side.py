"""What controllers answer gateways (roost.controller.gateway_rpc), on a real
state database: who a key is, who may touch an app, deploys and their logs,
and where a command runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller import gateway_rpc
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.deployflow import Move
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.messages import (
    AccountApps,
    AppAccess,
    AppGrant,
    AppNames,
    BuildAccepted,
    BuildLogChunk,
    BuildLogRequest,
    Error,
    GatewayDeploy,
    Heartbeat,
    InstanceStatus,
    LogLine,
    RunPlacement,
    RunTarget,
    SshAuth,
    SshIdentity,
)
from tests.migrated import migrated_sqlite
from tests.releases import go_live

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl dev@laptop"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = migrated_sqlite(tmp_path / "state.db")
    s = Store(make_engine(url))
    yield s
    s.engine.dispose()


@pytest.fixture
def svc(store: Store) -> Iterator[ControllerService]:
    controller = Controller(AsyncStore(store), Settings(), "test")
    controller.services = ServiceBroker(controller.store, SecretBox(b"k" * 32), None)
    yield ControllerService(controller, builders=None)
    controller.store.close()


async def test_keys_and_access(svc: ControllerService, store: Store) -> None:
    owner = store.create_account("owner@example.com")
    friend = store.create_account("friend@example.com")
    stranger = store.create_account("stranger@example.com")
    admin = store.create_account("admin@example.com", is_admin=True)
    fp = store.add_ssh_key(owner, KEY)
    app = store.create_app("shop", owner)
    store.add_collaborator(app.id, friend)

    who = await svc.handle(SshAuth(fingerprint=fp))
    assert who == SshIdentity(account_id=owner, email="owner@example.com")
    assert isinstance(await svc.handle(SshAuth(fingerprint="SHA256:nobody")), Error)

    for account in (owner, friend, admin):
        grant = await svc.handle(AppAccess(account_id=account, app="shop"))
        assert isinstance(grant, AppGrant) and grant.app_key == store.app("shop").key
        assert grant.app_id == app.id  # whose user the app's data tools run as
    refused = await svc.handle(AppAccess(account_id=stranger, app="shop"))
    missing = await svc.handle(AppAccess(account_id=stranger, app="nope"))
    # A stranger cannot tell an app it may not see from one that does not exist.
    assert isinstance(refused, Error) and isinstance(missing, Error)
    assert refused.message.replace("shop", "X") == missing.message.replace("nope", "X")

    shop = AppNames(apps=["shop"], ids={"shop": app.id})  # the ids of its own apps only
    assert await svc.handle(AccountApps(account_id=friend)) == shop
    assert await svc.handle(AccountApps(account_id=stranger)) == AppNames(apps=[])


async def test_deploy_is_idempotent_and_its_log_is_followed(
    svc: ControllerService, store: Store
) -> None:
    owner = store.create_account("owner@example.com")
    store.create_app("shop", owner)
    deploy = GatewayDeploy(account_id=owner, app="shop", build_id="b1", archive=b"\x1f\x8b..")
    assert await svc.handle(deploy) == BuildAccepted(build_id="b1")
    assert await svc.handle(deploy) == BuildAccepted(build_id="b1")  # a retry
    assert len(store.builds_in("failed")) == 1  # no builder here: failed at once

    chunk = await svc.handle(BuildLogRequest(account_id=owner, build_id="b1"))
    assert isinstance(chunk, BuildLogChunk)
    assert any("received" in line for line in chunk.lines)
    assert chunk.status == "failed" and "no builder" in chunk.error
    assert chunk.final and not chunk.live and chunk.outcome == "failed: no builder configured"
    after = await svc.handle(
        BuildLogRequest(account_id=owner, build_id="b1", after_id=chunk.next_after)
    )
    assert isinstance(after, BuildLogChunk) and after.lines == []

    other = store.create_account("other@example.com")
    assert isinstance(await svc.handle(BuildLogRequest(account_id=other, build_id="b1")), Error)
    assert isinstance(
        await svc.handle(GatewayDeploy(account_id=other, app="shop", build_id="b2", archive=b"")),
        Error,
    )


async def test_a_push_while_a_deploy_is_under_way_is_told_it_waits(
    svc: ControllerService, store: Store
) -> None:
    owner = store.create_account("owner@example.com")
    app = store.create_app("shop", owner)
    store.create_build("b1", app.id)  # a deploy under way
    push = GatewayDeploy(account_id=owner, app="shop", build_id="b2", archive=b"\x1f\x8b..")
    assert await svc.handle(push) == BuildAccepted(build_id="b2")
    chunk = await svc.handle(BuildLogRequest(account_id=owner, build_id="b2"))
    assert isinstance(chunk, BuildLogChunk)
    assert chunk.lines == ["-----> received 4 bytes; waiting for deploy b1 to finish"]
    assert (chunk.status, chunk.final) == ("queued", False)
    assert chunk.outcome == "waiting for the app's earlier deploy to end"


def _heartbeat(host: str, endpoint: str, apps: list[str]) -> Heartbeat:
    return Heartbeat(
        host_id=host,
        hostname=host,
        rpc_endpoint=endpoint,
        rpc_key="K" * 40 if endpoint else "",
        instances=[
            InstanceStatus(
                instance_id=f"{a}-web-{host}", app=a, release=1, process_type="web", state="up"
            )
            for a in apps
        ],
    )


async def test_run_placement(svc: ControllerService, store: Store) -> None:
    c = svc.c
    owner = store.create_account("owner@example.com")
    app = store.create_app("shop", owner)
    assert "no release" in str(await svc.handle(RunPlacement(account_id=owner, app="shop")))

    spec = AppSpec(processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="a:b")})
    store.create_build("b1", app.id)
    version = store.create_release(app.id, "b1", "sha256:img", "", spec, "", "test")
    go_live(store, app.id, version)
    store.update_config(app.id, {"SECRET": "s3"})
    now = time.monotonic()
    assert "no runner" in str(await svc.handle(RunPlacement(account_id=owner, app="shop")))

    c.soft.record(_heartbeat("cold", "tcp://10.0.0.1:1", []), now)
    c.soft.record(_heartbeat("warm", "tcp://10.0.0.2:1", ["shop"]), now)
    c.soft.record(_heartbeat("old", "", ["shop"]), now)  # serves no exec sessions
    for _ in range(10):
        target = await svc.handle(RunPlacement(account_id=owner, app="shop"))
        assert isinstance(target, RunTarget)
        assert target.host_id == "warm" and target.endpoint == "tcp://10.0.0.2:1"
    a = target.assignment
    assert (a.app, a.image_digest, a.process_type) == ("shop", "sha256:img", "run")
    assert a.spec == spec
    other = store.create_account("other@example.com")
    assert isinstance(await svc.handle(RunPlacement(account_id=other, app="shop")), Error)


async def test_a_pushs_closing_lines_reach_it_when_the_end_lands_between_reads(
    svc: ControllerService, store: Store
) -> None:
    """The final move and its closing lines are committed together: a chunk
    that says the deploy ended carries them, even when that commit lands
    between the chunk's reads (git push ended without 'v1 is live')."""
    owner = store.create_account("owner@example.com")
    app = store.create_app("up", owner)
    store.create_build("b1", app.id)
    controller = svc.c
    real_logs = controller.store.logs
    ended = False

    async def logs(*args: object) -> object:
        nonlocal ended
        rows = await real_logs(*args)  # type: ignore[arg-type]
        if not ended:  # the deploy ends right after the read of its lines
            ended = True
            line = LogLine(app="up", ts=0.0, source="build", process="b1", line="v1 is live")
            store.move_build("b1", Move("building", "live"), lines=[line])
        return rows

    controller.store.logs = logs  # type: ignore[method-assign]
    said: list[str] = []
    after = 0
    for _ in range(3):
        chunk = await svc.handle(BuildLogRequest(account_id=owner, build_id="b1", after_id=after))
        assert isinstance(chunk, BuildLogChunk)
        said += chunk.lines
        after = chunk.next_after
        if chunk.final and not chunk.lines:  # where the gateway stops following
            break
    assert said == ["v1 is live"] and chunk.live


async def test_a_poll_that_finds_nothing_is_answered_as_the_deploy_ends(
    svc: ControllerService, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower's poll is held (up to a poll's period) and answered when
    this replica ends the rollout, with its closing lines: not a poll later."""
    monkeypatch.setattr(gateway_rpc, "HOLD_S", 3600.0)  # only the end can answer it
    owner = store.create_account("owner@example.com")
    app = store.create_app("held", owner)
    store.create_build("b1", app.id)
    controller = svc.c
    real_logs = controller.store.logs
    reads = 0

    async def logs(*args: object) -> object:
        nonlocal reads
        rows = await real_logs(*args)  # type: ignore[arg-type]
        reads += 1
        if reads == 1:  # the rollout ends once the poll has found nothing
            line = LogLine(app="held", ts=0.0, source="build", process="b1", line="v1 is live")
            store.move_build("b1", Move("building", "live"), lines=[line])
            asyncio.get_running_loop().call_soon(controller.deploy_ended.ring)
        return rows

    controller.store.logs = logs  # type: ignore[method-assign]
    chunk = await asyncio.wait_for(svc.handle(BuildLogRequest(account_id=owner, build_id="b1")), 30)
    assert isinstance(chunk, BuildLogChunk)
    assert chunk.lines == ["v1 is live"] and chunk.final and chunk.live
