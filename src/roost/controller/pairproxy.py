"""Servicehost pairs as the controller knows them, and apps' one address.

Two things, both pure but for `record_pairs`:

- `pair_rows(entries)`: the pairs `cluster init` wrote into cluster.json
  (ClusterConfig.pairs) as state rows (store_pairs.PairRow); every
  controller records them at its start (`record_pairs`: a pair already
  recorded is left as it is, so a restart or a second controller changes
  nothing).
- `proxied(creds, pair)`: an app on a pair reaches its services only through
  its runner's data proxy (roost.runner.dataproxy), which follows Patroni's
  and Sentinel's view: the credentials its processes get name the proxy's
  address (PROXY_HOST, the same on every runner, on loopback), and the
  listeners each runner must serve for it. What a servicehost answered and
  the controller stores is never rewritten: `roost services info` still
  shows where the data is.

PostgreSQL: one listener per pair, on the pair's proxy port, over both
members (PostgreSQL port, Patroni REST port for the `GET /primary` check).
Redis: one listener per app, on its Redis port (the same on both copies),
over the pair's two servicehosts, checked with the app's own password (the
check logs in as the app, asks `INFO replication` and wants role:master).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from roost.controller.store_pairs import PairRow, PairStore
from roost.wire.cluster import PairEntry
from roost.wire.messages import DATA_PROXY_HOST, ProxyTarget, ServiceCredentials

PROXY_HOST = DATA_PROXY_HOST  # (wire/messages/runners.py says why this address)


def pair_rows(entries: Iterable[PairEntry]) -> list[PairRow]:
    """cluster.json's pairs as rows; a servicehost's id is its address (the
    host of its identity, as `cluster init` names it)."""
    rows = []
    for e in entries:
        if len(e.hosts) != 2:
            raise ValueError(f"servicehost pair {e.name} names {len(e.hosts)} hosts, not two")
        hosts = (e.hosts[0], e.hosts[1])
        rows.append(PairRow(e.name, hosts, hosts, e.pg_port, e.rest_port, e.proxy_port))
    return rows


def record_pairs(store: PairStore, entries: Iterable[PairEntry]) -> list[str]:
    """Record the pairs cluster.json names that are not yet; their names."""
    return [row.name for row in pair_rows(entries) if store.add_service_pair(row)]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _proxied_url(c: ServiceCredentials, port: int) -> str:
    """The credentials' URL with the proxy's address in place of the holder's."""
    scheme, rest = c.url.split("://", 1)
    auth, _, tail = rest.rpartition("@")
    path = tail[tail.index("/") :] if "/" in tail else ""
    return f"{scheme}://{auth}@{_url_host(PROXY_HOST)}:{port}{path}"


def proxied(
    creds: Sequence[ServiceCredentials], pair: PairRow | None
) -> tuple[list[ServiceCredentials], list[ProxyTarget]]:
    """What an app's processes connect to, and the listeners its runner's
    data proxy serves for it. An app on no pair (one machine, a cluster
    without pairs): its credentials as they are, no listener."""
    if pair is None:
        return list(creds), []
    out: list[ServiceCredentials] = []
    targets: list[ProxyTarget] = []
    for c in creds:
        if c.kind == "postgres":
            port = pair.proxy_port
            servers = [(a, pair.pg_port, pair.rest_port) for a in pair.addresses]
            targets.append(
                ProxyTarget(kind="postgres", name=pair.name, local_port=port, servers=servers)
            )
        elif c.kind == "redis":
            port = c.port
            servers = [(a, c.port, c.port) for a in pair.addresses]
            targets.append(
                ProxyTarget(
                    kind="redis", name=c.app, local_port=port, servers=servers, password=c.password
                )
            )
        else:
            out.append(c)
            continue
        out.append(_with_address(c, port))
    return out, targets


def _with_address(c: ServiceCredentials, port: int) -> ServiceCredentials:
    return msgspec.structs.replace(c, host=PROXY_HOST, port=port, url=_proxied_url(c, port))
