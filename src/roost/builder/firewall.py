"""The builder's firewall: build steps reach the internet, never the platform.

Build steps that run an app's code (its build user, `b<id>-<app>`, in the
tenant uid range: roost.tenant.identity) share the builder host's network:
they must fetch from package indexes, and must not reach any daemon's port.
The builder keeps one nftables table of its own, `roost_build`, rendered by
roost.tenant.firewall from a plan that names only the build uids and the
platform's hosts (the address book, peers.json, this host's own addresses):
to those, only DNS; to anything else, anything. It has no instance ports
(instances run on runners) and no allowances (a build has no services).

On one host the runner's table covers build uids too; the builder's makes the
same promise on a builder host of its own. As with the runner: ROOST_FIREWALL=off
or not root applies nothing and says so loudly; as root with the firewall on,
a missing or failing nft stops the builder rather than run build code
unprotected. The table is removed at stop while it is still the builder's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from roost.proc.exits import ConfigError, Unavailable
from roost.settings import Settings
from roost.tenant import nft as nftcmd
from roost.tenant.firewall import FirewallError, Plan, render
from roost.tenant.hosts import Resolver, platform_hosts, resolve
from roost.tenant.identity import BUILD_UID_BASE, TENANT_UID_MAX
from roost.wire.cluster import ClusterConfig

log = logging.getLogger("roost.builder")

TABLE = "roost_build"


class BuilderFirewallError(Unavailable):
    """The builder will not run build code unprotected (the message says how to fix)."""


def build_plan(hosts: Sequence[str], owner: str) -> Plan:
    """Only build uids; the platform's hosts; no instance ports, no allowances (pure)."""
    return Plan(
        table=TABLE,
        comment=owner,
        tenant_uids=(BUILD_UID_BASE, TENANT_UID_MAX),
        platform=tuple(hosts),
    )


class BuilderFirewall:
    def __init__(self, plan: Plan, nft: nftcmd.Nft | None) -> None:
        self.plan = plan
        self.nft = nft

    @classmethod
    async def start(
        cls,
        settings: Settings,
        cluster: ClusterConfig,
        members: Iterable[tuple[str, str]],
        *,
        nft_argv: Sequence[str] | None = None,
        resolver: Resolver = resolve,
    ) -> BuilderFirewall:
        owner = f"roost builder pid {os.getpid()}"
        if settings.firewall not in ("on", "off"):
            raise ConfigError(f"ROOST_FIREWALL must be 'on' or 'off', not {settings.firewall!r}")
        if settings.firewall == "off" or (nft_argv is None and os.geteuid() != 0):
            log.warning(
                "FIREWALL OFF: build steps reach every platform port on this host "
                "(ROOST_FIREWALL=off, or not root)"
            )
            return cls(Plan(), None)
        hosts: list[str] = []
        for host in platform_hosts(cluster, members):
            hosts += await resolver(host)
        plan = build_plan(hosts, owner)
        try:
            nft = nftcmd.Nft(nft_argv if nft_argv is not None else [nftcmd.locate()])
            await nft.apply(render(plan))
        except (nftcmd.NftError, FirewallError) as exc:
            raise BuilderFirewallError(
                f"firewall: {exc}. Refusing to run build code with platform ports open to "
                "it; set ROOST_FIREWALL=off to build without (development only)"
            ) from None
        log.info("firewall: table inet %s applied (platform hosts: %d)", TABLE, len(hosts))
        return cls(plan, nft)

    async def close(self) -> None:
        if self.nft is None:
            return
        try:
            await self.nft.remove(TABLE, owner=self.plan.comment)
        except nftcmd.NftError as exc:
            log.warning("firewall: could not remove table inet %s: %s", TABLE, exc)
