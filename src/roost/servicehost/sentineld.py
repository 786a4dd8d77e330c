"""`roost sentinel`: a host's Redis Sentinel alone, on a host that runs no
servicehost (a controller's).

Every app's Redis pair needs sentinels on three hosts, so that losing one
host leaves two to agree (quorum 2) and to elect the one that fails over:
both servicehosts of the pair run one (redispairs.py), and this is the
third. It watches nothing until a servicehost registers its masters. Like
the servicehost's, it runs as the service user, detached, adopted by its
pidfile when this daemon starts again; SIGTERM stops it, SIGUSR2 (a
hand-over) leaves it running for the next daemon.

Its configuration: the cluster's sentinel password (DATA/keys/sentinel.key)
and the address book, whose servicehost and controller hosts are where
sentinels run; this host is the one of them among its own addresses.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from roost.daemonize import run_daemon
from roost.proc.exits import ConfigError
from roost.servicehost import handover, redispairs
from roost.servicehost.addresses import listen_hosts
from roost.servicehost.layout import Layout
from roost.servicehost.sentinel import SentinelSpec
from roost.servicehost.sentinelproc import SentinelServer
from roost.servicehost.supervised import Servers, Supervised
from roost.servicehost.user import ensure_service_user
from roost.settings import Settings
from roost.wire.bootstrap import local_addresses
from roost.wire.cluster import ClusterConfig

log = logging.getLogger("roost.sentinel")


def own_host(sentinel_hosts: list[str], mine: set[str]) -> str:
    """This host among the sentinel hosts (ConfigError when it is none)."""
    found = [h for h in sentinel_hosts if h in mine]
    if len(found) != 1:
        raise ConfigError(
            f"this host is {'none' if not found else 'several'} of the sentinel hosts "
            f"({', '.join(sentinel_hosts)}): the address book's servicehosts and controllers"
        )
    return found[0]


async def serve(data_dir: Path, settings: Settings, stop: asyncio.Event) -> None:
    try:
        cluster = ClusterConfig.load(data_dir / "cluster.json")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{data_dir / 'cluster.json'} cannot be used: {exc}") from None
    config = redispairs.load_config(data_dir, cluster, settings.sentinel_port)
    if config is None:
        raise ConfigError(
            f"{data_dir / 'keys' / redispairs.SENTINEL_KEY} is missing: `roost cluster init` "
            "writes it where a cluster's servicehosts come in pairs"
        )
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise ConfigError("redis-server is not installed (apt-get install redis-server)")
    host = own_host([h for h, _ in config.sentinels], local_addresses())
    user = await asyncio.to_thread(ensure_service_user, settings.services_user)
    layout = Layout(data_dir)
    layout.create(searchable=user.dropped)
    spec = SentinelSpec(
        config.port, listen_hosts(settings.bind_host, host), host, config.password,
        layout.root / "sentinel",
    )  # fmt: skip
    server = SentinelServer(Path(redis_server), spec, layout.logs, user)

    async def body(handing_over: Callable[[], bool]) -> None:
        servers = Servers(log)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(servers.run())
            Supervised(servers, server, settings.restart_backoff_max_s)
            log.info("sentinel on %s:%d", host, config.port)
            await stop.wait()
            (servers.release if handing_over() else servers.stop)()

    await handover.serving(stop, body)


def run(data_dir: Path, settings: Settings) -> None:
    run_daemon("sentinel", lambda stop: serve(data_dir, settings, stop))
