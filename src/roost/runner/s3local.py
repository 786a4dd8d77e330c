"""An app's S3 endpoint on this runner's own host (issue 17, in a cluster).

A cluster's servicehost gives every bucket the same endpoint host,
RUNNER_S3_HOST (wire): the S3 gateway an app should use is the one on its
own runner's host, which outlives any other host's death, and credentials
are per app, not per runner. So the runner puts the address of its own
gateway in its place in every process's environment (instances, `run`
sessions, cron jobs and release commands), before the firewall reads
ROOST_SERVICE_ADDRESSES and before bundle_config is rendered from the
environment: the app may reach that host:port and no other port of it.

Only the placeholder is replaced, only in the variables the platform
sets for a bucket; an app from an older controller (a real host in its
endpoint) is left as it is. A runner with no gateway of its own leaves the
placeholder, which never resolves (the app's requests fail, not reach
elsewhere), and says so in its log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import msgspec

from roost.appspec.service_env import SERVICE_ADDRESSES
from roost.datadir import s3cluster
from roost.datadir.seaweed import Endpoint
from roost.datadir.weedplan import WeedPlan
from roost.wire.messages import RUNNER_S3_HOST, InstanceAssignment, Msg, RunStart

log = logging.getLogger("roost.runner")

# The platform's names for a bucket's endpoint (appspec/service_env.py).
ENDPOINT_VARS = ("AWS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def own_gateway(plan: WeedPlan | None) -> Endpoint | None:
    """This host's S3 gateway, when the cluster's plan runs one here."""
    gateways = s3cluster.of_plan(plan)
    return gateways.gateway if gateways is not None else None


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def localized_env(env: Mapping[str, str], ip: str) -> dict[str, str]:
    """`env` with this host's address (`ip`) for RUNNER_S3_HOST in the
    bucket's endpoint variables and in ROOST_SERVICE_ADDRESSES."""
    out = dict(env)
    placeholder = f"://{RUNNER_S3_HOST}:"
    for name in ENDPOINT_VARS:
        value = out.get(name, "")
        if placeholder in value:
            out[name] = value.replace(placeholder, f"://{_host(ip)}:", 1)
    addresses = out.get(SERVICE_ADDRESSES, "")
    if addresses:
        words = [
            _host(ip) + w[len(RUNNER_S3_HOST) :] if w.startswith(f"{RUNNER_S3_HOST}:") else w
            for w in addresses.split()
        ]
        out[SERVICE_ADDRESSES] = " ".join(words)
    return out


def uses_placeholder(env: Mapping[str, str]) -> bool:
    return any(f"://{RUNNER_S3_HOST}:" in env.get(n, "") for n in ENDPOINT_VARS)


class LocalS3:
    """Applies `localized_env` to what the runner is given to run."""

    def __init__(self, gateway: Endpoint | None) -> None:
        self.gateway = gateway
        self._warned: set[str] = set()

    def assignment(self, a: InstanceAssignment) -> InstanceAssignment:
        if not uses_placeholder(a.env) and RUNNER_S3_HOST not in a.env.get(SERVICE_ADDRESSES, ""):
            return a
        if self.gateway is None:
            if a.app not in self._warned:
                self._warned.add(a.app)
                log.error(
                    "%s's bucket is served by this cluster's S3 gateways, but this host runs "
                    "none: its S3 endpoint does not resolve here",
                    a.app,
                )
            return a
        return msgspec.structs.replace(a, env=localized_env(a.env, self.gateway.ip))

    def assignments(self, instances: list[InstanceAssignment]) -> list[InstanceAssignment]:
        return [self.assignment(a) for a in instances]

    def guard(
        self, start: Callable[[RunStart], Awaitable[Msg]]
    ) -> Callable[[RunStart], Awaitable[Msg]]:
        """`start` of a `run` session or cron job, given the localized environment."""

        async def localized(msg: RunStart) -> Msg:
            a = self.assignment(msg.assignment)
            if a is not msg.assignment:
                msg = msgspec.structs.replace(msg, assignment=a)
            return await start(msg)

        return localized
