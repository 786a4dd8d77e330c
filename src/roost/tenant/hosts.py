"""The platform's hosts as a firewall sees them (roost.tenant.firewall's plans).

Shared by every role that keeps a tenant table: the runner (its instances,
runs and cron) and the builder (its build steps).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from roost import aio
from roost.wire.cluster import ClusterConfig

log = logging.getLogger("roost.tenant")

RESOLVE_TIMEOUT_S = 5.0
_LOCAL_HOSTS = ("", "*", "0.0.0.0", "::", "localhost")

Resolver = Callable[[str], Awaitable[list[str]]]


def endpoint_host(address: str) -> str:
    """The host of a ZeroMQ endpoint ("tcp://[::1]:7100" -> "::1")."""
    rest = address.partition("://")[2] or address
    host = rest.rpartition(":")[0]
    host = host.rpartition(";")[2]  # "tcp://eth0;10.0.0.5:7100": the source part goes
    return host.removeprefix("[").removesuffix("]")


def platform_hosts(
    cluster: ClusterConfig, members: Iterable[tuple[str, str]], own_host: str = ""
) -> list[str]:
    """Every host of the address book and of `members` ((role, host) pairs,
    peers.json's), less those that mean this host (sorted, unique)."""
    hosts = {endpoint_host(ep.address) for eps in cluster.endpoints.values() for ep in eps}
    hosts |= {host for _role, host in members}
    return sorted(h for h in hosts if h not in (*_LOCAL_HOSTS, own_host))


async def resolve(host: str) -> list[str]:
    """The addresses of `host` (itself when it is an address); [] when it has none."""
    loop = asyncio.get_running_loop()
    try:
        infos = await aio.wait_for(loop.getaddrinfo(host, None), RESOLVE_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        log.warning("firewall: cannot resolve %s: %s", host, exc)
        return []
    return sorted({str(info[4][0]) for info in infos})
