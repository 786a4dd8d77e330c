"""The receiving end of bench/build.py's copy: a second host's store, in its own process.

Run by bench/build.py, not by hand: pulls one image (roost.images.pull, as a
runner's copy does) from the builder's image store over CURVE and prints the
seconds it took, so the receiver's hashing and checking compete with the
builder for the CPU, as on two hosts sharing these cores, but not for one
interpreter's lock.
Usage: copyrecv.py KEYDIR ADDRESS SERVER_PUBLIC DIGEST DEST
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from roost.images.pull import pull_into_store
from roost.images.store import ImageStore
from roost.wire.cluster import Endpoint
from roost.wire.keys import load_keypair
from roost.wire.node import Node
from roost.wire.rpc import RpcClient


async def main(keydir: str, address: str, server_public: str, digest: str, dest: str) -> None:
    pair = load_keypair(Path(keydir), "client")
    async with Node(pair, []) as node:
        client = RpcClient(node, [Endpoint(address, server_public)])
        try:
            start = time.perf_counter()
            await pull_into_store(client, digest, ImageStore(Path(dest)))
            print(f"{time.perf_counter() - start:.6f}", flush=True)
        finally:
            await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
