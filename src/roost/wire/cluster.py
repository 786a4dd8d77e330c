"""The cluster's address book: which endpoints serve which role, and their keys.

Written by `roost up` (one host) or `roost cluster init/join` into the data
directory as `cluster.json`; every daemon reads it at start.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Endpoint(msgspec.Struct, frozen=True):
    address: str  # "tcp://127.0.0.1:5555"
    public_key: str  # z85 server key of the socket bound there


class PairEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A servicehost pair whose PostgreSQL is one Patroni cluster
    (roost.servicehost.pgpair; no secrets here): its two servicehosts'
    addresses, its ports, and where each runner's data proxy serves it."""

    name: str
    hosts: list[str]
    pg_port: int = 5434
    rest_port: int = 8009
    proxy_port: int = 6432


class ClusterConfig(msgspec.Struct, kw_only=True):
    name: str = "roost"
    # role -> endpoints, e.g. "controller", "controller-pub", "builder", "images".
    endpoints: dict[str, list[Endpoint]] = {}
    # State database for controllers ("" = SQLite in the controller's data dir).
    state_url: str = ""
    # Its members' Patroni REST port when `cluster init` made it (--state-hosts):
    # a controller asks which member is the primary and tries it first
    # (controller/stateorder.py). 0: not Patroni's, or an address book
    # written before it was recorded (then PostgreSQL's port is probed).
    state_rest_port: int = 0
    # Servicehost pairs (`cluster init` with two servicehosts or more and an
    # etcd): the controllers record them at start. [] on one machine.
    pairs: list[PairEntry] = []

    def of(self, role: str) -> list[Endpoint]:
        return list(self.endpoints.get(role, []))

    @staticmethod
    def load(path: Path) -> ClusterConfig:
        config = msgspec.json.decode(path.read_bytes(), type=ClusterConfig)
        # Address books written before the role was named after its package
        # call the servicehost "services".
        if "services" in config.endpoints and "servicehost" not in config.endpoints:
            config.endpoints["servicehost"] = config.endpoints.pop("services")
        return config

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(self)))
        os.replace(tmp, path)
