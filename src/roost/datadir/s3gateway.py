"""A cluster's S3 gateways: one `weed s3` on every host that runs a filer
front (pure: its command line).

Theory of operation. With two filers (a PostgreSQL state database), every
host that mounts the tree runs a filer front (filerfront.py) that hands
connections to the first filer while it lives and to the second while it
does not. The gateway is given that front as its filer, so it follows the
first filer and moves to the second when the first's host dies, as the
mounts do; its buckets are the filers' (`weedplan.BUCKETS_FOLDER`), their
objects written with the tree's placement (two copies on two volume
servers). An app is given the gateway on its own runner's host: that
address outlives any other host's death.

Identities are the filers' (`/etc/iam`, s3.configure), which every
gateway follows from the filer's metadata stream. Measured on 4.48: an
identity deleted there is refused (InvalidAccessKeyId) by a gateway within
a second, unlike a `-config` file's HUP, which merges. The servicehost's
side (provisioning a bucket and its key through the cluster rather than its
own `weed server`) is not done: docs/architecture.md says what is left.
"""

from __future__ import annotations

from roost.datadir.seaweed import Endpoint

S3_PORT = 7154  # each gateway's S3 port; its gRPC port at +10000
GRPC_OFFSET = 10000


def argv(weed: str, at: Endpoint, filer: Endpoint) -> list[str]:
    """`weed s3` on `at`, reaching the filers through `filer` (the host's
    front). Every port is given: Iceberg's and Lance's listeners are off
    (their fixed default ports would collide between platforms)."""
    return [
        weed, "s3", f"-filer={filer}", f"-ip.bind={at.ip}", f"-port={at.port}",
        f"-port.grpc={at.port + GRPC_OFFSET}", "-port.iceberg=0", "-port.lance=0",
    ]  # fmt: skip
