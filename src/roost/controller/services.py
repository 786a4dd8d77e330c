"""The controller's side of databases as services: asking a servicehost to
provision or remove them, keeping the credentials (encrypted), and turning
them into the environment of the app's instances."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from roost.appspec.model import AppSpec
from roost.appspec.service_env import service_environment
from roost.controller.astore import AsyncStore
from roost.controller.secretbox import SecretBox
from roost.controller.store import AppRow
from roost.wire.messages import (
    ServiceCredentials,
    ServiceDeprovision,
    ServiceHostStatus,
    ServiceKind,
    ServiceProvision,
    ServiceRemoved,
)
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.controller")

KINDS = ("postgres", "redis")


class ServiceError(Exception):
    """`status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


def _kind(kind: str) -> ServiceKind:
    if kind == "postgres":
        return "postgres"
    if kind == "redis":
        return "redis"
    raise ServiceError(f"unsupported service {kind!r} (Roost provides: {', '.join(KINDS)})", 422)


class ServiceBroker:
    def __init__(self, store: AsyncStore, box: SecretBox, client: RpcClient | None) -> None:
        self.store = store
        self.box = box
        self.client = client
        # app id -> its opened credentials; an app missing has not been read.
        self._cache: dict[int, list[ServiceCredentials]] = {}
        self._changes = 0  # bumped by every binding change this replica makes
        self.status: dict[str, ServiceHostStatus] = {}

    async def warm(self, app_ids: Iterable[int]) -> None:
        """Read the credentials of the apps not cached yet: one query whatever
        their number (all bindings when several are missing)."""
        wanted = set(app_ids)
        while missing := {i for i in wanted if i not in self._cache}:
            changes = self._changes
            one = next(iter(missing)) if len(missing) == 1 else None
            rows = await self.store.service_bindings(one)
            if changes != self._changes:
                continue  # a binding changed meanwhile: what was read may be stale
            found: dict[int, list[ServiceCredentials]] = {i: [] for i in missing}
            for row in rows:
                if row.app_id in found:
                    found[row.app_id].append(ServiceCredentials(**self.box.open(row.secret)))
            self._cache.update(found)

    def _forget(self, app_id: int) -> None:
        self._changes += 1
        self._cache.pop(app_id, None)

    def forget(self, app_ids: Iterable[int]) -> None:
        """Read these apps' credentials again when next asked (another
        controller may have bound or removed a service since)."""
        for app_id in app_ids:
            self._forget(app_id)

    def cached_credentials(self, app_id: int) -> list[ServiceCredentials]:
        """The app's credentials, read by `warm` before (KeyError if not)."""
        return self._cache[app_id]

    async def credentials(self, app_id: int) -> list[ServiceCredentials]:
        await self.warm([app_id])
        return self._cache[app_id]

    async def environment(self, app_id: int) -> dict[str, str]:
        return service_environment(await self.credentials(app_id))

    async def kinds(self, app_id: int) -> list[str]:
        return [c.kind for c in await self.credentials(app_id)]

    def _need_client(self, what: str) -> RpcClient:
        if self.client is None:
            raise ServiceError(
                f"cannot {what}: no servicehost is configured (install postgresql and redis-server)"
            )
        return self.client

    async def add(self, app: AppRow, kind: str, memory_mb: int = 0) -> ServiceCredentials:
        if kind not in KINDS:
            raise ServiceError(
                f"unsupported service {kind!r} (Roost provides: {', '.join(KINDS)})", 422
            )
        client = self._need_client(f"provision {kind}")
        try:
            reply = await client.call(
                ServiceProvision(app=app.name, kind=_kind(kind), memory_mb=memory_mb), timeout=40
            )
        except (RpcTimeout, RemoteError) as exc:
            raise ServiceError(f"could not provision {kind} for {app.name}: {exc}") from None
        if not isinstance(reply, ServiceCredentials):
            raise ServiceError(
                f"servicehost answered {type(reply).__name__} to a provisioning request"
            )
        sealed = self.box.seal({f: getattr(reply, f) for f in reply.__struct_fields__})
        await self.store.bind_service(app.id, kind, sealed)
        self._forget(app.id)
        return reply

    async def ensure(self, app: AppRow, spec: AppSpec) -> list[str]:
        """Provision what the spec asks for and the app lacks; the kinds added."""
        have = set(await self.kinds(app.id))
        added = []
        for kind in spec.services:
            if kind in have:
                continue
            memory = spec.redis_memory_mb or 0 if kind == "redis" else 0
            await self.add(app, kind, memory)
            added.append(kind)
        return added

    async def remove(self, app: AppRow, kind: str) -> str:
        """Final backup, then drop: returns where the backup is."""
        if kind not in await self.kinds(app.id):
            raise ServiceError(f"{app.name} has no {kind} service", 404)
        client = self._need_client(f"remove {kind}")
        try:
            reply = await client.call(
                ServiceDeprovision(app=app.name, kind=_kind(kind)), timeout=600, tries=1
            )
        except (RpcTimeout, RemoteError) as exc:
            raise ServiceError(
                f"could not take the final backup of {kind}; nothing was removed: {exc}"
            ) from None
        if not isinstance(reply, ServiceRemoved):
            raise ServiceError(f"servicehost answered {type(reply).__name__} to a removal request")
        await self.store.unbind_service(app.id, kind)
        self._forget(app.id)
        return reply.backup_path

    async def remove_all(self, app: AppRow) -> dict[str, str]:
        return {kind: await self.remove(app, kind) for kind in await self.kinds(app.id)}
