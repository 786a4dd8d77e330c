"""The FastAPI application every controller replica serves."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from roost import __version__
from roost.controller import metrics
from roost.controller.api import (
    accounts,
    apps,
    backups,
    certs,
    dashboard,
    dataquota,
    deploys,
    deps,
    epio,
    hosts,
    logdrains,
    manage,
    notify,
    services,
)
from roost.controller.core import Controller
from roost.controller.ratelimit import LoginGuard
from roost.controller.service import ControllerService

log = logging.getLogger("roost.controller.api")

# What a client is told to wait before trying again while the state database
# is unreachable: a Patroni failover ends within its ttl (15 s).
DB_RETRY_AFTER_S = 5


def create_api(
    controller: Controller, service: ControllerService, guard: LoginGuard | None = None
) -> FastAPI:
    api = FastAPI(
        title="Roost",
        version=__version__,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    api.state.controller = controller
    api.state.service = service
    api.state.login_guard = guard or LoginGuard()

    @api.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @api.exception_handler(OperationalError)
    async def database_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        # The state database is down or failing over (its primary's host
        # died, the connection broke mid-request): a transient state of the
        # platform, not a bug in the request, so 503 and when to retry, as
        # for any other role that is down. Nothing was committed that the
        # caller was told of: a failed commit is never retried here.
        log.warning("state database unavailable: %s", exc.orig)
        return JSONResponse(
            {"message": "the state database is unavailable (a failover may be under way): retry"},
            status_code=503,
            headers={"Retry-After": str(DB_RETRY_AFTER_S)},
        )

    @api.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"] if x != "body")
        return JSONResponse(
            {"message": f"invalid request: {where}: {first['msg']}", "errors": errors},
            status_code=422,
        )

    @api.get("/api/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "controller": controller.name,
            "leader": controller.is_leader,
            "version": __version__,
        }

    metrics.install(api, controller, deps.metrics_reader)
    for module in (
        apps,
        hosts,
        deploys,
        manage,
        services,
        backups,
        accounts,
        epio,
        dashboard,
        certs,
        logdrains,
        notify,
        dataquota,
    ):
        api.include_router(module.router)
    return api
