"""The controller's side of databases as services: asking a servicehost to
provision or remove them, keeping the credentials (encrypted), and turning
them into the environment of the app's instances."""

from __future__ import annotations

import asyncio
import logging

from roost.appspec.model import AppSpec
from roost.appspec.service_env import service_environment
from roost.controller.secretbox import SecretBox
from roost.controller.store import AppRow, Store
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
    def __init__(self, store: Store, box: SecretBox, client: RpcClient | None) -> None:
        self.store = store
        self.box = box
        self.client = client
        self._cache: dict[int, list[ServiceCredentials]] = {}
        self.status: dict[str, ServiceHostStatus] = {}

    def credentials(self, app_id: int) -> list[ServiceCredentials]:
        if app_id not in self._cache:
            creds = []
            for row in self.store.service_bindings(app_id):
                creds.append(ServiceCredentials(**self.box.open(row.secret)))
            self._cache[app_id] = creds
        return self._cache[app_id]

    def environment(self, app_id: int) -> dict[str, str]:
        return service_environment(self.credentials(app_id))

    def kinds(self, app_id: int) -> list[str]:
        return [c.kind for c in self.credentials(app_id)]

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
        await asyncio.to_thread(self.store.bind_service, app.id, kind, sealed)
        self._cache.pop(app.id, None)
        return reply

    async def ensure(self, app: AppRow, spec: AppSpec) -> list[str]:
        """Provision what the spec asks for and the app lacks; the kinds added."""
        have = set(self.kinds(app.id))
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
        if kind not in self.kinds(app.id):
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
        await asyncio.to_thread(self.store.unbind_service, app.id, kind)
        self._cache.pop(app.id, None)
        return reply.backup_path

    async def remove_all(self, app: AppRow) -> dict[str, str]:
        return {kind: await self.remove(app, kind) for kind in list(self.kinds(app.id))}
