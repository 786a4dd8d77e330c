"""Send backupd requests as a host of the cluster would: run inside that host's
namespace, with that host's own CURVE key from its data directory.

    python -m tests.cluster.backups_probe DATA KEY APP REQUEST...

REQUEST names one of `requests(APP)`. Prints a JSON object: request -> the
reply's type, or "error: ..." (a refusal is "error: refused: ..."), or
"timeout".
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from roost.wire.cluster import ClusterConfig
from roost.wire.keys import load_keypair
from roost.wire.messages import (
    BackupCapture,
    BackupListRequest,
    BackupPolicySet,
    BackupRestore,
    Msg,
    Ping,
)
from roost.wire.node import Node
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout


def requests(app: str) -> dict[str, Msg]:
    """What a servicehost would send to erase history: a policy keeping almost
    nothing, a restore over the app's data, captures (to push old backups
    out), a list (to learn what there is); and a ping."""
    return {
        "ping": Ping(),
        "list": BackupListRequest(app=app),
        "policy": BackupPolicySet(app=app, pitr_days=1, daily=1, weekly=0, monthly=0),
        "capture": BackupCapture(app=app, reason="capture"),
        "restore": BackupRestore(app=app, at="2001-01-01T00:00:00Z"),
    }


async def probe(data: Path, key: str, app: str, names: list[str]) -> dict[str, str]:
    keypair = load_keypair(data / "keys", key)
    endpoints = ClusterConfig.load(data / "cluster.json").of("backupd")
    out: dict[str, str] = {}
    async with Node(keypair, []) as node:
        client = RpcClient(node, endpoints)
        try:
            for name in names:
                try:
                    reply = await client.call(requests(app)[name], timeout=15, tries=1)
                    out[name] = type(reply).__name__
                except RemoteError as exc:
                    out[name] = f"error: {exc}"
                except RpcTimeout:
                    out[name] = "timeout"
        finally:
            await client.close()
    return out


def main(argv: list[str]) -> None:
    data, key, app, *names = argv
    print(json.dumps(asyncio.run(probe(Path(data), key, app, names))))


if __name__ == "__main__":
    main(sys.argv[1:])
