"""How a daemon finds its keys and its peers in a data directory.

Layout (written by `roost up` or `roost cluster join`):
  DATA/cluster.json          ClusterConfig: endpoints per role
  DATA/keys/NAME.key         public keys of every member (the ZAP allow list)
  DATA/keys/NAME.key_secret  this host's secret keys
"""

from __future__ import annotations

from pathlib import Path

from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.keys import load_keypair, load_public_keys
from roost.wire.node import Node


def open_node(data_dir: Path, name: str) -> tuple[Node, ClusterConfig]:
    """A started-later Node for daemon `name` and the cluster's address book."""
    keys = data_dir / "keys"
    node = Node(load_keypair(keys, name), load_public_keys(keys))
    return node, ClusterConfig.load(data_dir / "cluster.json")


def own_endpoints(cluster: ClusterConfig, role: str, node: Node) -> list[Endpoint]:
    """The endpoints of `role` this daemon must bind (those carrying its key)."""
    mine = node.keypair.public_text
    return [ep for ep in cluster.of(role) if ep.public_key == mine]


def bind_address(address: str) -> str:
    """Bind on the endpoint's port on every interface of this host when asked."""
    return address
