"""backupd's side of an app's S3 bucket: pull every object, put them back.

Pull (BucketPull): the removal's final backup itself (`S3Server.archive`:
the filer's listing walked, each object read whole and its size checked)
into a scratch file, answered as bytes. backupd stores it with the app's
data directory, in the "data" kind's snapshot.

Restore (BucketRestore): the bucket becomes exactly the archive's objects,
replaced whole as a data directory is (DataRestore): every member is
checked first (regular files, keys without `..` or a leading `/`), then
what the bucket holds is kept as a tar.gz among the app's backups here
(`host.backup_path`), then every object that is not in the archive is
deleted (through the filer) and every one that is is written, under the
app's s3 lock. A bad archive changes nothing.

Metadata (s3meta): each object's content type, plain headers, user
metadata and tags are in its member's PAX headers (an archive from before
has none: its objects come back without). They go back only through S3 (the
filer's HTTP drops metadata and tags), so each object is a PutObject to
the gateway, signed with the app's own key: on one machine this
servicehost's `weed server`, in a cluster this host's gateway.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple

from roost.datadir import s3meta
from roost.servicehost import s3filer
from roost.servicehost.host import ServiceHost
from roost.servicehost.names import BadAppName, check_app
from roost.servicehost.s3 import S3Problem, S3Server, ServiceProblem
from roost.servicehost.s3cluster import ClusterBuckets
from roost.servicehost.state import Service
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import BucketArchive, BucketPull, BucketRestore, BucketRestored, Msg

log = logging.getLogger("roost.servicehost")

HTTP_TIMEOUT_S = 60.0


class Stored(NamedTuple):
    """One object of a bucket's archive: its bytes and metadata (s3meta)."""

    data: bytes
    meta: dict[str, str]


def objects_of(archive: bytes) -> dict[str, Stored]:
    """key -> bytes and metadata of each object in a bucket's tar.gz
    (directories are skipped); refused whole when a member is another kind
    of file, its name could leave the bucket, or its metadata is not one a
    restore puts (s3meta.check)."""
    out: dict[str, Stored] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for m in tar.getmembers():
                if m.isdir():
                    continue  # a key's prefix: S3 has no directories
                parts = m.name.split("/")
                if not m.isfile() or m.name.startswith("/") or ".." in parts or "" in parts:
                    raise ServiceProblem(f"refusing the bucket archive's member {m.name!r}")
                try:
                    meta = s3meta.of_pax(m.pax_headers)
                except s3meta.BadMetadata as exc:
                    raise ServiceProblem(
                        f"refusing the bucket archive's member {m.name!r}: {exc}"
                    ) from None
                fh = tar.extractfile(m)
                assert fh is not None  # a regular file
                out[m.name] = Stored(fh.read(), meta)
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as exc:
        raise ServiceProblem(f"the bucket archive does not read: {exc}") from None
    return out


def _send(method: str, url: str, body: bytes | None = None) -> None:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        if (method, exc.code) != ("DELETE", 404):  # gone already
            raise S3Problem(f"the filer answered {exc.code} to {method}") from None


class BucketBackups:
    def __init__(self, host: ServiceHost) -> None:
        self.host = host

    def entries(self) -> list[Entry]:
        errors = (ServiceProblem, BadAppName)
        return [
            on(BucketPull, refusing(self.pull, *errors)),
            on(BucketRestore, refusing(self.restore, *errors)),
        ]

    async def _server(self, app: str) -> tuple[S3Server | ClusterBuckets, Service]:
        """Where the app's bucket is read and written: this servicehost's
        own server, or a cluster's filers (servicehost/s3cluster.py); and
        the app's bucket service (its bucket, key and secret)."""
        svc = self.host.state.get(app, "s3")
        if svc is None:
            raise ServiceProblem(f"app {app!r} has no bucket on this servicehost")
        return await self.host.s3.store(), svc

    async def pull(self, msg: BucketPull) -> Msg:
        app = check_app(msg.app)
        async with self.host.lock(app, "s3"):
            server, svc = await self._server(app)
            bucket = svc.database
            fd, name = tempfile.mkstemp(prefix=".bucket-", dir=self.host.layout.root)
            os.close(fd)
            try:
                await server.archive(bucket, Path(name))
                data = await asyncio.to_thread(Path(name).read_bytes)
            except (OSError, S3Problem, ValueError) as exc:
                raise ServiceProblem(f"bucket {bucket} could not be read: {exc}", True) from None
            finally:
                os.unlink(name)
        count = len(objects_of(data))
        log.info("bucket %s of %s pulled for backupd: %d objects", bucket, app, count)
        return BucketArchive(app=app, archive=data, objects=count)

    async def restore(self, msg: BucketRestore) -> Msg:
        app = check_app(msg.app)
        wanted = objects_of(msg.archive)  # checked whole before anything changes
        async with self.host.lock(app, "s3"):
            server, svc = await self._server(app)
            bucket = svc.database
            kept = self.host.backup_path(app, "s3")
            try:
                await server.archive(bucket, kept)
                await asyncio.to_thread(self._replace, server, svc, wanted)
            except (OSError, S3Problem, ValueError) as exc:
                raise ServiceProblem(
                    f"bucket {bucket} was not restored whole (its objects before are in "
                    f"{kept}): {exc}"
                ) from None
        log.info(
            "bucket %s of %s restored (%s): %d objects", bucket, app, msg.restore_id, len(wanted)
        )
        return BucketRestored(app=app, objects=len(wanted), kept=str(kept))

    def _replace(
        self, server: S3Server | ClusterBuckets, svc: Service, wanted: dict[str, Stored]
    ) -> None:
        top = f"{server.buckets_dir}/{svc.database}"

        def url(key: str) -> str:
            return f"{server.filer()}{urllib.parse.quote(f'{top}/{key}', safe='/')}"

        for path, _size in list(server.walk(top)):
            if path[len(top) + 1 :] not in wanted:
                _send("DELETE", url(path[len(top) + 1 :]))
        at = gateway_of(server)
        for key, obj in wanted.items():
            s3filer.put_object(
                at, svc.database, key, obj.data, obj.meta, svc.username, svc.password
            )


def gateway_of(server: S3Server | ClusterBuckets) -> str:
    """host:port of the S3 gateway that writes the bucket: one machine's
    `weed server`, or in a cluster the gateway on this host."""
    if isinstance(server, ClusterBuckets):
        return str(server.gw.gateway)
    return f"{server.ip}:{server.node.ports.s3}"
