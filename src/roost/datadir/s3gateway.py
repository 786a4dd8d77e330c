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

Identities are the filers' (`/etc/iam/identities/NAME.json`), written by
`weed shell`'s s3.configure (`configure_script`), which every gateway
follows. Measured on 4.48: an identity deleted that way is refused
(InvalidAccessKeyId) by a running gateway within a second, unlike a
`-config` file's HUP, which merges; so an app's key is removed, not
revoked. An identity file PUT through the filer's HTTP instead was not
taken by a running gateway within 30 s: only s3.configure (or the IAM
gRPC it calls) is used. The servicehost provisions buckets and keys
through them (s3cluster.py).
"""

from __future__ import annotations

import re

from roost.datadir import s3plan
from roost.datadir.s3plan import Key
from roost.datadir.seaweed import Endpoint

S3_PORT = 7154  # each gateway's S3 port; its gRPC port at +10000
GRPC_OFFSET = 10000
# An identity's name is its file's name in /etc/iam/identities and a word of
# a `weed shell` line: no separator, no space.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def argv(weed: str, at: Endpoint, filer: Endpoint) -> list[str]:
    """`weed s3` on `at`, reaching the filers through `filer` (the host's
    front). Every port is given: Iceberg's and Lance's listeners are off
    (their fixed default ports would collide between platforms)."""
    return [
        weed, "s3", f"-filer={filer}", f"-ip.bind={at.ip}", f"-port={at.port}",
        f"-port.grpc={at.port + GRPC_OFFSET}", "-port.iceberg=0", "-port.lance=0",
    ]  # fmt: skip


def _name(key: Key) -> str:
    if not _NAME.match(key.name):
        raise ValueError(f"identity name {key.name!r}: letters, digits, '-' and '_' only")
    return key.name


def configure_script(key: Key) -> str:
    """`weed shell` input putting `key`'s identity in the filers' /etc/iam:
    with no bucket, the admin (Admin); else an app's, `s3plan.APP_ACTIONS`
    on its bucket only. ValueError for a name, key or bucket that is not
    one (nothing is written)."""
    s3plan.check_key(key)
    words = [
        "s3.configure", f"-user={_name(key)}",
        f"-access_key={key.access_key}", f"-secret_key={key.secret_key}",
    ]  # fmt: skip
    if key.bucket:
        if s3plan.bucket_name(key.bucket) != key.bucket:
            raise ValueError(f"{key.bucket!r} is not a bucket's name")
        words += [f"-actions={','.join(s3plan.APP_ACTIONS)}", f"-buckets={key.bucket}"]
    else:
        words.append("-actions=Admin")
    return " ".join([*words, "-apply"]) + "\nexit\n"


def remove_script(key: Key) -> str:
    """`weed shell` input deleting `key`'s identity (its gateways drop it)."""
    return f"s3.configure -user={_name(key)} -delete -apply\nexit\n"


def shell_argv(weed: str, masters: list[Endpoint], filer: Endpoint) -> list[str]:
    return [weed, "shell", f"-master={','.join(str(m) for m in masters)}", f"-filer={filer}"]
