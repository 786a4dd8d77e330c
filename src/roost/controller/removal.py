"""A deleted app's directories, on every host, so a reused name starts empty.

Theory of operation: the state database forgets a deleted app at once, but
its name left directories behind on other hosts: the servicehost's canonical
data directory, each runner's app home and data copy, each gateway's git
cache. Each role keys those directories by the app's *key* (one incarnation
of the name: `app_key`) and archives them when told the incarnation is gone
(`roost.appdirs` has the rules):

  - servicehosts hold the only canonical copy of the data, so the delete
    waits for every one of them to archive it, before and again after the
    rows go (the second pass takes anything a session authorised just
    before the delete wrote meanwhile). One that cannot be reached stops
    the delete with nothing removed, as a failed final backup does.
  - runners that are up are told at once, and do not hold the delete up: a
    runner that misses it still has the old key on its directory, and
    archives it before any instance of a new app of that name starts there.
  - gateways serve no RPC: they archive a repository when the controller
    gives a different key for the name (each git command asks, AppGrant) or
    none (their periodic sweep, AppKeysRequest).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from roost.controller.services import ServiceError
from roost.controller.store import AppRow
from roost.wire.cluster import Endpoint
from roost.wire.messages import AppRemoved, Msg, Ok
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.controller")

SERVICEHOST_TIMEOUT_S = 60.0  # a big data directory is one rename, but disks stall
RUNNER_TIMEOUT_S = 10.0


def removal_failures(replies: list[Msg | BaseException]) -> list[str]:
    """Why each servicehost that did not confirm the removal failed (pure)."""
    out = []
    for r in replies:
        if isinstance(r, Ok):
            continue
        out.append(str(r) if isinstance(r, BaseException) else f"answered {type(r).__name__}")
    return out


async def archive_on_servicehosts(client: RpcClient | None, app: AppRow) -> None:
    """Every servicehost archives the app's data directory, or ServiceError."""
    if client is None:
        return  # no servicehost: no app has a data directory
    msg = AppRemoved(app=app.name, app_key=app.key)
    failed = removal_failures(await client.call_all(msg, timeout=SERVICEHOST_TIMEOUT_S))
    if failed:
        raise ServiceError(
            f"the servicehost could not archive {app.name}'s data directory "
            f"({'; '.join(failed)}), so the app was kept"
        )


async def tell_runners(
    endpoints: list[Endpoint], client_for: Callable[[Endpoint], RpcClient], app: AppRow
) -> list[str]:
    """Ask each runner to archive the app's directories; the hosts that failed.

    Best effort: a runner that misses it archives on the next use of the name.
    """
    msg = AppRemoved(app=app.name, app_key=app.key)

    async def one(ep: Endpoint) -> str:
        client = client_for(ep)
        try:
            await client.call(msg, timeout=RUNNER_TIMEOUT_S, tries=1)
        except (RpcTimeout, RemoteError) as exc:
            log.warning("%s: runner %s did not archive it: %s", app.name, ep.address, exc)
            return ep.address
        finally:
            await client.close()
        return ""

    return [a for a in await asyncio.gather(*(one(ep) for ep in endpoints)) if a]


async def after_delete(
    data_hosts: RpcClient | None,
    runners: list[Endpoint],
    client_for: Callable[[Endpoint], RpcClient] | None,
    app: AppRow,
) -> None:
    """Once the rows are gone: the servicehosts' second pass, then the runners.

    Never raises: the app is deleted; what is missed here is caught by keys.
    """
    try:
        await archive_on_servicehosts(data_hosts, app)
    except ServiceError as exc:
        log.warning("%s: second archive pass: %s", app.name, exc)
    if client_for is not None and runners:
        await tell_runners(runners, client_for, app)
