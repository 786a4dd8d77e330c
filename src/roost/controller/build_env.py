"""What a build's app code sees: the controller's answer to BuildEnvRequest.

ep.io apps import `bundle_config` at module level and Django settings read
it (DATABASES from config['postgres']), so the builder's import check and
collectstatic need the app's real service credentials and config vars, as
its instances get them. The builder asks once it has read the app's
configuration; this answers for the app whose build `build_id` is, and only
while that build is `building`: a builder cannot name another app, and a
finished build's id opens nothing. The services the spec declares and the
app lacks are provisioned here first (the deploy's own provisioning stage
then finds nothing left to add). An app on a servicehost pair is given the
address its instances get, the runner's data proxy (controller.pairproxy).
The answer travels CURVE-encrypted, as an
instance's assignment does; the builder keeps it in the build's directory
alone (roost.builder.pipeline), never in the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from roost.appspec.service_env import CredentialFields, service_environment
from roost.controller.core import Controller
from roost.controller.deployflow import Stage, stage_of
from roost.controller.services import ServiceError
from roost.controller.store import NotFound
from roost.wire.dispatch import Entry, on
from roost.wire.messages import BuildEnv, BuildEnvRequest, Error, Msg, ServiceCredentials


def build_environment(
    creds: Iterable[CredentialFields], config: Mapping[str, str]
) -> dict[str, str]:
    """Service credentials, then the config vars (which may override them),
    as an instance's environment has them (Controller.instance_env; the
    service addresses it adds are for the runner's firewall, not the app)."""
    env = service_environment(creds)
    env.update(config)
    return env


class BuildEnvRpc:
    def __init__(self, controller: Controller) -> None:
        self.c = controller

    def entries(self) -> list[Entry]:
        return [on(BuildEnvRequest, self.build_env)]

    async def build_env(self, msg: BuildEnvRequest) -> Msg:
        c = self.c
        try:
            build = await c.store.build(msg.build_id)
        except NotFound:
            return Error(message=f"unknown build {msg.build_id}")
        if stage_of(build.status) is not Stage.BUILDING:
            return Error(message=f"build {msg.build_id} is not building ({build.status})")
        app = await c.store.app_by_id(build.app_id)
        services = c.services
        if msg.spec.services:
            if services is None:
                return Error(
                    message="this platform has no servicehost; the app asks for "
                    + ", ".join(msg.spec.services)
                )
            try:
                added = await services.ensure(app, msg.spec)
            except ServiceError as exc:
                return Error(message=str(exc))
            for kind in added:
                await c.platform_log(app.name, f"-----> provisioned {kind}", build.id, "build")
        creds: list[ServiceCredentials] = []
        if services is not None:
            # What its instances connect with: on a pair, the runner's data
            # proxy address, not the servicehost that answered the provision
            # (the build reaches neither: its firewall lets build code reach
            # no platform host; what it bakes from settings must hold where
            # the app runs).
            await services.warm([app.id])
            creds = services.app_credentials(app.id)
        config = await c.store.config_vars(app.id)
        return BuildEnv(build_id=build.id, env=build_environment(creds, config))
