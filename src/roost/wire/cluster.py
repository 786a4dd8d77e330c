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


class ClusterConfig(msgspec.Struct, kw_only=True):
    name: str = "roost"
    # role -> endpoints, e.g. "controller", "controller-pub", "builder", "images".
    endpoints: dict[str, list[Endpoint]] = {}
    # State database for controllers ("" = SQLite in the controller's data dir).
    state_url: str = ""

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
