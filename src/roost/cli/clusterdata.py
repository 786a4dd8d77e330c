"""`roost cluster init`'s part for the apps' shared data tree (issue 17).

A cluster with a servicehost and at least two storage hosts (servicehosts
and runners) gets a SeaweedFS tree: each host taking part finds its share
in its bundle's appdata.json (roost.datadir.weedplan) and its roles start
it themselves (roost.datadir.weednode): no operator step. Without those
hosts, or with --no-shared-data, runners keep pulled copies as before.

With a PostgreSQL state database (--state, or --state-hosts: Patroni), the
tree's metadata is kept there by two filers (roost.datadir.weedstore: a
database and role of their own, made by Patroni's bootstrap or by a
controller at its start; the password only in the filer hosts' bundles and
the Patroni hosts'). With SQLite one filer keeps it in its host's own
store, and the output says so: that host's loss for good loses the tree's
names.
"""

from __future__ import annotations

import msgspec

from roost.datadir import weedplan, weedstore
from roost.datadir.weedplan import (
    FilerStore,
    PlanError,
    WeedPlan,
    filers_of,
    for_host,
    hosts_of,
    new_plan,
)

PLAN_FILE = weedplan.PLAN_FILE


def store_for(state_url: str) -> FilerStore | None:
    """The filers' shared store, when the state database can hold it."""
    if not state_url:
        return None
    try:
        return weedstore.store_for(state_url)
    except PlanError:
        return None  # SQLite: each filer's own store


def plan(
    hosts: dict[str, list[str]], enabled: bool, store: FilerStore | None = None
) -> tuple[WeedPlan | None, str]:
    """The shared tree's plan for these hosts (None and why not, when none)."""
    if not enabled:
        return None, "off (--no-shared-data): runners keep pulled copies"
    roles = [(h, set(r)) for h, r in hosts.items()]
    if not any("servicehost" in r for _, r in roles):
        return None, "none: no servicehost keeps apps' data"
    controllers = [h for h, r in roles if "controller" in r]
    storage = [h for h, r in roles if {"servicehost", "runner"} & r]
    try:
        shared = new_plan(controllers, storage, store)
    except PlanError as exc:
        return None, f"none: {exc}"
    # Apps' buckets in the tree (servicehost/s3cluster.py): a gateway on
    # every host with a filer front, so with two filers only.
    return msgspec.structs.replace(shared, s3_gateways=store is not None), ""


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
    filers = filers_of(shared)
    if shared.store is not None:
        meta = (
            f"filers on {' and '.join(filers)} (metadata in the state database's PostgreSQL, "
            f"database {shared.store.database})"
        )
    else:
        meta = (
            f"filer on {filers[0]} (metadata in that host's own store: losing it for good "
            "loses every app's tree; a PostgreSQL state database (--state) keeps it there, "
            "with two filers)"
        )
    masters = shared.masters
    master = (
        f"masters on {', '.join(masters)}"
        if len(masters) > 1
        else f"master on {masters[0]} (while it is down, no new file can be written)"
    )
    return (
        f"apps' data: SeaweedFS, {master}, {meta}, two copies over "
        f"{', '.join(shared.volumes)} (mounted on each)"
    )
