"""The controller daemon: HTTP API, ZeroMQ service, lease and reconcile loops."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn

from roost import __version__
from roost.controller import filerstore, pgwatch, restorehold, spare, upgrade
from roost.controller.acme import AcmeRunner
from roost.controller.acme import settings_problem as acme_settings_problem
from roost.controller.api.app import create_api
from roost.controller.apitls import ApiTlsError, api_certificate, api_url
from roost.controller.astore import AsyncStore
from roost.controller.backups import Backups, backupds_of
from roost.controller.bootstrap import NotAdmin, bootstrap_admin
from roost.controller.core import TICK_S, Controller
from roost.controller.cronrunner import CronRunner
from roost.controller.notifier import Notifier
from roost.controller.pairproxy import record_pairs
from roost.controller.platformsnap import PlatformFiles
from roost.controller.secretbox import FERNET_FILE, SecretBox, SecretError
from roost.controller.service import ControllerService
from roost.controller.servicehosts import ServiceHosts
from roost.controller.services import ServiceBroker
from roost.controller.stateorder import state_engine
from roost.controller.statewait import probe as probe_state
from roost.controller.statewait import wait_for_state
from roost.controller.store import NotFound, Store
from roost.daemonize import run_daemon
from roost.datadir import weednode
from roost.proc.exits import ConfigError
from roost.settings import Settings
from roost.state.db import sqlite_url
from roost.wire.bootstrap import open_node, own_endpoints
from roost.wire.pubsub import Publisher
from roost.wire.rpc import RpcClient, RpcServer

log = logging.getLogger("roost.controller")


class _Server(uvicorn.Server):
    # The daemon owns signal handling; uvicorn must not re-raise them itself.
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


def state_url_for(data_dir: Path, state_url: str | None) -> str:
    return state_url or sqlite_url(data_dir / "state.db")


GC_GEN0_THRESHOLD = 50_000


def backup_failed_event(store: AsyncStore) -> Callable[[str, str], Awaitable[None]]:
    """A backupd's failed capture as a platform event (`backup-failed`, of
    the app when it exists): others may have taken it, but never silently."""

    async def report(app: str, message: str) -> None:
        app_id = None
        if app:
            with contextlib.suppress(NotFound):
                app_id = (await store.app(app)).id
        await store.add_event("backup-failed", message, app_id)
        await store.notify_event("backup-failed", app, message)

    return report


async def serve(
    data_dir: Path, settings: Settings, name: str, state_url: str | None, stop: asyncio.Event
) -> None:
    # A reconcile pass over thousands of instances allocates as many objects;
    # with the default thresholds that sets off collections of the whole heap
    # in the middle of it (measured: +100 ms at 10,000 instances). Process-wide,
    # so it is set here, where the process is the controller's.
    if gc.get_threshold()[0] < GC_GEN0_THRESHOLD:
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)
    if (problem := acme_settings_problem(settings)) is not None:
        raise ConfigError(f"controller: {problem}")
    node, cluster = open_node(data_dir, name)
    try:
        box = SecretBox.from_file(data_dir / "keys" / FERNET_FILE)
    except SecretError as exc:
        raise ConfigError(str(exc)) from None
    url = state_url_for(data_dir, state_url or cluster.state_url or None)
    # Its members' Patroni REST port: each connection tries the primary
    # first (stateorder.py; 0, a URL of another's: PostgreSQL's port probed).
    rest_port = cluster.state_rest_port if url == cluster.state_url else 0
    if not await wait_for_state(url, stop, functools.partial(probe_state, rest_port=rest_port)):
        return
    # An upgrade copies the state before it migrates it (controller.upgrade).
    backupd = bool(cluster.of("backupd"))
    await upgrade.migrate_after_copy(data_dir, url, __version__, backupd, rest_port)
    store = Store(state_engine(url, rest_port), secrets=box)  # TLS keys are sealed with it too
    # Before the API listens: whoever saw it answer finds the admin's token.
    try:
        await asyncio.to_thread(bootstrap_admin, store, data_dir, name)
    except NotAdmin as exc:
        log.error("no admin token in DATA/controller: %s", exc)
    # The servicehost pairs `cluster init` named (cluster.json), recorded once.
    added = await asyncio.to_thread(record_pairs, store, cluster.pairs)
    if added:
        log.info("servicehost pairs recorded: %s", ", ".join(added))
    # From here on the database is reached only through the async face.
    astore = AsyncStore(store)
    # A cluster's shared tree (datadir/weedplan.py): this host's SeaweedFS
    # master and filer, if any, stopped with the controller; the filers'
    # store in the state database made through its URL (filerstore.py).
    filers = functools.partial(filerstore.keep_ensured, url, rest_port=rest_port)
    async with node, weednode.running(data_dir, "controller", None, lambda: False, filers):
        controller = Controller(astore, settings, name)
        services = RpcClient(node, cluster.of("servicehost")) if cluster.of("servicehost") else None
        # Each servicehost on its own client: they hold different apps' data.
        holders = ServiceHosts(cluster.of("servicehost"), lambda ep: RpcClient(node, [ep]))
        controller.services = ServiceBroker(astore, box, services, holders if services else None)
        # One client per backupd: each keeps its own history (controller.backupfan).
        controller.backups = Backups(
            backupds_of(node, cluster.of("backupd")), backup_failed_event(astore)
        )
        builders = RpcClient(node, cluster.of("builder")) if cluster.of("builder") else None
        service = ControllerService(
            controller,
            builders,
            lambda ep: RpcClient(node, [ep]),
            PlatformFiles(data_dir, url, rest_port),
        )
        controller.client_for = service.client_for
        servers = [
            RpcServer(node, ep.address, service.handle)
            for ep in own_endpoints(cluster, "controller", node)
        ]
        pubs = [
            Publisher(node, ep.address) for ep in own_endpoints(cluster, "controller-pub", node)
        ]
        if not servers:
            raise ConfigError(f"cluster.json has no controller endpoint for key {name}")
        controller.publisher = pubs[0] if pubs else None
        api = create_api(controller, service)
        try:
            tls = await asyncio.to_thread(api_certificate, data_dir, settings)
        except ApiTlsError as exc:
            raise ConfigError(f"controller: {exc}") from None
        config = uvicorn.Config(
            api,
            host=settings.bind_host,
            port=settings.api_port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(tls.certfile) if tls else None,
            ssl_keyfile=str(tls.keyfile) if tls else None,
            # A client holding a keep-alive connection open (an HTTPS pool)
            # must not keep a stopping controller up forever.
            timeout_graceful_shutdown=5,
        )
        http = _Server(config)
        log.info("controller %s: API on %s", name, api_url(settings))
        if tls is not None:
            log.info("API certificate %s, SHA-256 %s", tls.certfile, tls.fingerprint)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(controller.lease_loop()),
                    tg.create_task(controller.reconcile_loop()),
                    tg.create_task(controller.housekeeping_loop()),
                    tg.create_task(controller.logdrains.run()),
                    tg.create_task(controller.hosts_heard.loop(TICK_S)),
                    tg.create_task(service.copy_loop()),
                    tg.create_task(service.queue_loop()),
                    tg.create_task(Notifier(astore, settings, lambda: controller.is_leader).loop()),
                    tg.create_task(service.release_phase.loop()),
                    tg.create_task(CronRunner(controller, lambda ep: RpcClient(node, [ep])).loop()),
                    tg.create_task(AcmeRunner(controller, settings).loop()),
                    # Each servicehost pair's PostgreSQL: metrics, dashboard, events.
                    tg.create_task(
                        pgwatch.watch_loop(controller, astore, lambda: controller.is_leader)
                    ),
                    # A lost paired servicehost replaced by a spare (issue 16).
                    tg.create_task(spare.spare_loop(controller, lambda: controller.is_leader)),
                    # An app a restore suspended, resumed once it is over (issue 16).
                    tg.create_task(restorehold.hold_loop(controller, lambda: controller.is_leader)),
                    tg.create_task(
                        upgrade.capture_pending(
                            data_dir, controller.backups, lambda: service.platform.served
                        )
                    ),
                    *(tg.create_task(s.serve()) for s in servers),
                ]
                http_task = tg.create_task(http.serve())
                await stop.wait()
                log.info("controller stopping")
                http.should_exit = True
                await http_task
                for t in tasks:
                    t.cancel()
        finally:
            await controller.give_up_lease()
            await controller.nudger.close()
            for p in pubs:
                p.close()
            for client in (builders, services):
                if client is not None:
                    await client.close()
            await holders.close()
            for b in controller.backups.backupds:
                await b.client.close()
            await astore.aclose()


def run(
    data_dir: Path, settings: Settings, name: str = "controller", state_url: str | None = None
) -> None:
    run_daemon("controller", lambda stop: serve(data_dir, settings, name, state_url, stop))
