"""Running apps: config, formation, restarts, releases, suspension, domains,
certificates, collaborators, events and the "who runs X" query."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from roost.appspec import webserving
from roost.appspec.runtime import GRACEFUL_TIMEOUT_VAR, parse_graceful_timeout
from roost.controller import lifecycle
from roost.controller.api.deps import (
    ApiError,
    CurrentAccount,
    CurrentController,
    app_for_member,
    app_for_owner,
)
from roost.controller.core import Controller
from roost.controller.domains import (
    DomainRefused,
    check_domain,
    default_host,
    normalize,
    routable_domains,
)
from roost.controller.store import AppRow, Conflict, NotFound
from roost.controller.tls import CertificateError, check_certificate

router = APIRouter(prefix="/api")

CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
PROCESS_TYPE = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_INSTANCES = 100


async def _new_release(
    c: Controller,
    app: AppRow,
    description: str,
    config: dict[str, str] | None = None,
    source: int | None = None,
) -> int | None:
    """Roll the app onto a copy of `source` (default: the serving release)."""
    base = source if source is not None else app.current_release
    if base is None:
        return None
    version = await c.store.copy_release(app.id, base, description, config=config)
    await c.store.add_event("release", f"{app.name} v{version}: {description}", app.id)
    c.wake.set()
    return version


# ------------------------------------------------------------ config

# Collaborators read and set config vars, as on Heroku: they deploy code that
# reads every var at run time and can `run` a shell printing them, so keeping
# config from them would protect nothing and would stop them shipping a
# change that needs a new var.


class ConfigPatch(BaseModel):
    # value: set it; null: unset it
    vars: dict[str, str | None] = Field(default_factory=dict)


@router.get("/apps/{name}/config")
async def get_config(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, str]:
    return await c.store.config_vars((await app_for_member(c, who, name)).id)


@router.patch("/apps/{name}/config")
async def patch_config(
    name: str, body: ConfigPatch, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    if not body.vars:
        raise ApiError(422, "no config vars given")
    for key, value in body.vars.items():
        if not CONFIG_KEY.match(key):
            raise ApiError(422, f"invalid config var name {key!r}")
        if value is not None and len(value) > 32768:
            raise ApiError(422, f"value of {key} is longer than 32768 characters")
        if key == GRACEFUL_TIMEOUT_VAR and value is not None:
            try:  # read by runners when an instance stops: refused here, not there
                parse_graceful_timeout(value)
            except ValueError as exc:
                raise ApiError(422, str(exc)) from None
        if value is not None:
            try:  # gunicorn's workers, threads, preloading: read by runners too
                webserving.check(key, value)
            except ValueError as exc:
                raise ApiError(422, str(exc)) from None
    new = await c.store.update_config(app.id, body.vars)
    changed = ", ".join(f"{k}" if v is not None else f"-{k}" for k, v in sorted(body.vars.items()))
    release = await _new_release(c, app, f"config {changed}", config=new)
    return {"config": new, "release": release}


# ------------------------------------------------------------ formation and restarts


class FormationPatch(BaseModel):
    quantities: dict[str, int] = {}
    # Memory per instance of a type, in MB (its cgroup's limit; 0: the default).
    sizes: dict[str, int] = {}


MIN_MEMORY_MB, MAX_MEMORY_MB = 64, 64 * 1024


@router.get("/apps/{name}/formation")
async def get_formation(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, int]:
    return await c.store.formation((await app_for_member(c, who, name)).id)


@router.patch("/apps/{name}/formation")
async def scale(
    name: str, body: FormationPatch, who: CurrentAccount, c: CurrentController
) -> dict[str, int]:
    app = await app_for_member(c, who, name)
    if not body.quantities and not body.sizes:
        raise ApiError(422, "no process types given")
    known: set[str] = set()
    singles: set[str] = set()  # types that never run twice (app.json formation)
    if app.current_release is not None:
        spec = (await c.store.release(app.id, app.current_release)).spec
        known, singles = set(spec.processes), set(spec.singletons)
    for ptype in {*body.quantities, *body.sizes}:
        if not PROCESS_TYPE.match(ptype):
            raise ApiError(422, f"invalid process type {ptype!r}")
        if known and ptype not in known:
            raise ApiError(
                422, f"{name} has no process type {ptype!r} (it has: {', '.join(sorted(known))})"
            )
    for ptype, qty in body.quantities.items():
        if not 0 <= qty <= MAX_INSTANCES:
            raise ApiError(422, f"{ptype}: quantity must be between 0 and {MAX_INSTANCES}")
        if ptype in singles and qty > 1:
            raise ApiError(422, f"{ptype} is a singleton (app.json formation): 0 or 1, not {qty}")
    for ptype, mb in body.sizes.items():
        if mb != 0 and not MIN_MEMORY_MB <= mb <= MAX_MEMORY_MB:
            raise ApiError(
                422,
                f"{ptype}: memory must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB} MB "
                "(0: the platform's default)",
            )
    await c.store.set_formation(app.id, body.quantities, body.sizes)
    said = [f"{k}={v}" for k, v in body.quantities.items()]
    said += [f"{k}:{v}MB" for k, v in body.sizes.items()]
    await c.store.add_event("scale", f"{name}: " + " ".join(said), app.id)
    c.wake.set()
    return await c.store.formation(app.id)


class RestartBody(BaseModel):
    process: str | None = None


@router.post("/apps/{name}/restart")
async def restart(
    name: str, body: RestartBody, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    """Restart by rolling onto a fresh copy of the serving release (no downtime)."""
    app = await app_for_member(c, who, name)
    if app.current_release is None:
        raise ApiError(409, f"{name} has no release to restart")
    if body.process is not None:
        spec = (await c.store.release(app.id, app.current_release)).spec
        if body.process not in spec.processes:
            raise ApiError(422, f"{name} has no process type {body.process!r}")
        await c.restart_process(app, body.process)
        return {"restarted": body.process}
    return {"release": await _new_release(c, app, "restart")}


# ------------------------------------------------------------ releases


class RollbackBody(BaseModel):
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


@router.post("/apps/{name}/rollback")
async def rollback(
    name: str, body: RollbackBody, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    rels = await c.store.releases(app.id)
    if body.version is None:
        earlier = [
            r
            for r in rels
            if r.status == "superseded"
            and (app.current_release is None or r.version < app.current_release)
        ]
        if not earlier:
            raise ApiError(409, f"{name} has no earlier release to roll back to")
        target = earlier[0].version
    else:
        target = body.version
        if not any(r.version == target for r in rels):
            raise ApiError(404, f"{name} has no release v{target}")
    # A release is code + config: rolling back restores that release's config
    # vars too, so the next `config set` starts from what is running.
    old_config = next(r.config for r in rels if r.version == target)
    current = await c.store.config_vars(app.id)
    changes: dict[str, str | None] = {k: None for k in current if k not in old_config}
    changes.update(old_config)
    if changes:
        await c.store.update_config(app.id, changes)
    return {
        "release": await _new_release(c, app, f"rollback to v{target}", source=target),
        "from": target,
    }


# ------------------------------------------------------------ suspend / resume


# Members may suspend and resume: scaling every process to 0 does the same.
@router.post("/apps/{name}/suspend")
async def suspend(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    await lifecycle.set_suspended(c, await app_for_member(c, who, name), True)
    return {"name": name, "suspended": True}


@router.post("/apps/{name}/resume")
async def resume(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    await lifecycle.set_suspended(c, await app_for_member(c, who, name), False)
    return {"name": name, "suspended": False}


# ------------------------------------------------------------ domains and certificates


class DomainBody(BaseModel):
    hostname: str = Field(min_length=1, max_length=253)


@router.get("/apps/{name}/domains")
async def list_domains(name: str, who: CurrentAccount, c: CurrentController) -> list[str]:
    return [d.hostname for d in await c.store.domains((await app_for_member(c, who, name)).id)]


@router.post("/apps/{name}/domains", status_code=201)
async def add_domain(
    name: str, body: DomainBody, who: CurrentAccount, c: CurrentController
) -> dict[str, str]:
    app = await app_for_owner(c, who, name)
    try:
        host = check_domain(body.hostname, app.name, c.settings.default_domain)
    except DomainRefused as exc:
        raise ApiError(exc.status, str(exc)) from None
    try:
        await c.store.add_domain(app.id, host)
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None
    c.wake.set()
    return {"hostname": host}


@router.delete("/apps/{name}/domains/{hostname}")
async def remove_domain(
    name: str, hostname: str, who: CurrentAccount, c: CurrentController
) -> dict[str, str]:
    app = await app_for_owner(c, who, name)
    try:
        await c.store.remove_domain(app.id, normalize(hostname))
    except (NotFound, DomainRefused):
        raise ApiError(404, f"{hostname} is not a domain of {name}") from None
    c.wake.set()
    return {"removed": hostname}


class CertBody(BaseModel):
    hostname: str = Field(min_length=1, max_length=253)
    certificate: str = Field(min_length=1, max_length=200_000)
    private_key: str = Field(min_length=1, max_length=200_000)


@router.post("/apps/{name}/certs", status_code=201)
async def add_cert(
    name: str, body: CertBody, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_owner(c, who, name)
    try:
        host = normalize(body.hostname)
    except DomainRefused as exc:
        raise ApiError(exc.status, str(exc)) from None
    # What the router sends to this app: never a name the domain policy
    # refuses, even if an old row holds one (its certificate would serve
    # another app's hostname).
    own = routable_domains(
        name, [d.hostname for d in await c.store.domains(app.id)], c.settings.default_domain
    )
    routed = {*own, default_host(name, c.settings.default_domain)}
    if host not in routed:
        raise ApiError(
            422, f"{host} is not a domain of {name}: add it with 'roost domains add' first"
        )
    try:
        info = check_certificate(body.certificate, body.private_key, host)
    except CertificateError as exc:
        raise ApiError(422, str(exc)) from None
    await c.store.put_certificate(app.id, host, body.certificate, body.private_key, info.not_after)
    # An uploaded certificate is the owner's to renew: ACME no longer replaces it.
    await c.store.acme_drop_orders([host])
    c.wake.set()
    return {"hostname": host, "not_after": info.not_after, "subject": info.subject}


@router.get("/apps/{name}/certs")
async def list_certs(name: str, who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    app = await app_for_member(c, who, name)
    return [
        {"hostname": r.hostname, "not_after": r.not_after}
        for r in await c.store.certificates(app.id)
    ]


# ------------------------------------------------------------ collaborators


class CollaboratorBody(BaseModel):
    email: str = Field(min_length=3, max_length=320)


@router.post("/apps/{name}/collaborators", status_code=201)
async def add_collaborator(
    name: str, body: CollaboratorBody, who: CurrentAccount, c: CurrentController
) -> dict[str, str]:
    app = await app_for_owner(c, who, name)
    row = await c.store.account_by_email(body.email)
    if row is None:
        raise ApiError(404, f"no account {body.email}")
    await c.store.add_collaborator(app.id, row.id)
    return {"email": body.email}


@router.get("/apps/{name}/collaborators")
async def list_collaborators(name: str, who: CurrentAccount, c: CurrentController) -> list[str]:
    return await c.store.collaborators((await app_for_member(c, who, name)).id)


@router.delete("/apps/{name}/collaborators/{email}")
async def remove_collaborator(
    name: str, email: str, who: CurrentAccount, c: CurrentController
) -> dict[str, str]:
    # A collaborator may leave; only the owner (or an admin) removes others.
    if email.strip().lower() == who.email.lower():
        app = await app_for_member(c, who, name)
    else:
        app = await app_for_owner(c, who, name)
    row = await c.store.account_by_email(email)
    if row is None:
        raise ApiError(404, f"no account {email}")
    await c.store.remove_collaborator(app.id, row.id)
    return {"removed": email}


# ------------------------------------------------------------ events and where


@router.get("/events")
async def events(
    who: CurrentAccount, c: CurrentController, limit: int = 100
) -> list[dict[str, Any]]:
    if not 1 <= limit <= 1000:
        raise ApiError(422, "limit must be between 1 and 1000")
    ids = None if who.is_admin else await c.store.apps_visible_to(who.id)
    return [
        {"ts": e.ts, "app": e.app, "kind": e.kind, "message": e.message}
        for e in await c.store.events(ids, limit)
    ]


@router.get("/apps/{name}/where")
async def where(
    name: str, who: CurrentAccount, c: CurrentController, process: str | None = None
) -> list[dict[str, Any]]:
    """Which hosts run which instances of the app, and in which state (any replica answers)."""
    app = await app_for_member(c, who, name)
    return await _instances(c, app.name, process)


async def _instances(c: Controller, app: str, process: str | None) -> list[dict[str, object]]:
    statuses = c.soft.statuses()
    out: list[dict[str, object]] = []
    for p in await c.store.placements(app):
        if process and p.process_type != process:
            continue
        st = statuses.get(p.instance_id)
        seen = c.soft.hosts.get(p.host_id)
        out.append(
            {
                "instance_id": p.instance_id,
                "process": f"{p.process_type}.{p.idx}",
                "release": p.release,
                "host_id": p.host_id,
                "hostname": seen.heartbeat.hostname if seen else "",
                "host_state": "up" if c.soft.alive(p.host_id) else "down",
                "state": st.state if st else "unknown",
                "port": st.port if st else 0,
            }
        )
    return sorted(out, key=lambda r: (str(r["process"]), str(r["host_id"])))
