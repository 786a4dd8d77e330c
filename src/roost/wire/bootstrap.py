"""How a daemon finds its keys and its peers in a data directory.

Layout (written by `roost up` or `roost cluster join`):
  DATA/cluster.json          ClusterConfig: endpoints per role
  DATA/keys/peers.json       every member's public key, role and host (the ZAP
                             allow list: a key not listed there is refused)
  DATA/keys/NAME.key_secret  this host's secret keys, one per role it runs
                             (NAME.key beside it: its public half)
  DATA/keys/fernet.key       controllers only: the state database's secrets key
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import psutil

from roost.proc.exits import ConfigError
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import PEERS_FILE, load_peers
from roost.wire.keys import load_keypair
from roost.wire.node import Node

log = logging.getLogger("roost.wire")


def open_node(data_dir: Path, name: str) -> tuple[Node, ClusterConfig]:
    """A started-later Node for daemon `name` and the cluster's address book.

    The Node admits only the keys in peers.json, each as its role and host.
    """
    keys = data_dir / "keys"
    book = data_dir / "cluster.json"
    # A missing or broken key or address book is a configuration error: the
    # daemon exits CONFIG_ERROR with the reason, and is not restarted as is.
    try:
        peers = load_peers(keys)
        keypair = load_keypair(keys, name)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the keys in {keys} cannot be used: {exc}") from None
    try:
        cluster = ClusterConfig.load(book)
    except (OSError, ValueError) as exc:  # (msgspec's errors are ValueErrors)
        raise ConfigError(f"{book} cannot be used: {exc}") from None
    if not peers:
        log.warning("%s lists no peers: this daemon admits no one", keys / PEERS_FILE)
    return Node(keypair, peers), cluster


def local_addresses() -> set[str]:
    """IP addresses assigned to this host's (or network namespace's) interfaces."""
    addrs = {"127.0.0.1", "::1"}
    for entries in psutil.net_if_addrs().values():
        for a in entries:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                addrs.add(a.address.split("%")[0])
    return addrs


def endpoint_host(address: str) -> str:
    """'tcp://10.0.0.1:5555' -> '10.0.0.1' ('[::1]' unwrapped)."""
    hostport = address.split("://", 1)[-1]
    host = hostport.rsplit(":", 1)[0]
    return host.strip("[]")


def own_endpoints(
    cluster: ClusterConfig, role: str, node: Node, only: str | None = None
) -> list[Endpoint]:
    """The endpoints of `role` this daemon must bind.

    Those carrying its key and an address of this host; on one host with
    several replicas of a role sharing a key, `only` (a daemon's --bind)
    picks one.
    """
    mine = node.keypair.public_text
    local = local_addresses()
    out = [
        ep
        for ep in cluster.of(role)
        if ep.public_key == mine and endpoint_host(ep.address) in local
    ]
    if only is not None:
        out = [ep for ep in out if ep.address == only]
    return out
