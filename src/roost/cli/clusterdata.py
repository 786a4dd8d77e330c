"""`roost cluster init`'s part for the apps' shared data tree (issue 17).

A cluster with a servicehost and at least two storage hosts (servicehosts
and runners) gets a SeaweedFS tree: each host taking part finds its share
in its bundle's appdata.json (roost.datadir.weedplan) and its roles start
it themselves (roost.datadir.weednode): no operator step. Without those
hosts, or with --no-shared-data, runners keep pulled copies as before.
"""

from __future__ import annotations

import msgspec

from roost.datadir import weedplan
from roost.datadir.weedplan import PlanError, WeedPlan, for_host, hosts_of, new_plan

PLAN_FILE = weedplan.PLAN_FILE


def plan(hosts: dict[str, list[str]], enabled: bool) -> tuple[WeedPlan | None, str]:
    """The shared tree's plan for these hosts (None and why not, when none)."""
    if not enabled:
        return None, "off (--no-shared-data): runners keep pulled copies"
    roles = [(h, set(r)) for h, r in hosts.items()]
    if not any("servicehost" in r for _, r in roles):
        return None, "none: no servicehost keeps apps' data"
    controllers = [h for h, r in roles if "controller" in r]
    storage = [h for h, r in roles if {"servicehost", "runner"} & r]
    try:
        return new_plan(controllers, storage), ""
    except PlanError as exc:
        return None, f"none: {exc}"


def add_to_bundles(
    bundles: dict[str, dict[str, bytes]], hosts: dict[str, list[str]], shared: WeedPlan
) -> None:
    """Each host's share of the tree into its bundle files."""
    for host in hosts_of(shared):
        mine = for_host(shared, host, hosts.get(host, []))
        bundles[host][PLAN_FILE] = msgspec.json.format(msgspec.json.encode(mine))


def bundle_host(content: bytes) -> str:
    """The host an appdata.json is for (ValueError when it is not one)."""
    try:
        mine = msgspec.json.decode(content, type=WeedPlan)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{PLAN_FILE}: {exc}") from None
    if not mine.host:
        raise ValueError(f"{PLAN_FILE} names no host")
    return mine.host


def summary(shared: WeedPlan) -> str:
    return (
        f"apps' data: SeaweedFS, master on {', '.join(shared.masters)}, filer on "
        f"{shared.filer}, two copies over {', '.join(shared.volumes)} (mounted on each)"
    )
