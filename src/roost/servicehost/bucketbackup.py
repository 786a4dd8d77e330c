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
deleted and every one that is is written, through the filer, under the
app's s3 lock. A bad archive changes nothing.
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

from roost.servicehost.host import ServiceHost
from roost.servicehost.names import BadAppName, check_app
from roost.servicehost.s3 import S3Problem, S3Server, ServiceProblem
from roost.servicehost.s3cluster import ClusterBuckets
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import BucketArchive, BucketPull, BucketRestore, BucketRestored, Msg

log = logging.getLogger("roost.servicehost")

HTTP_TIMEOUT_S = 60.0


def objects_of(archive: bytes) -> dict[str, bytes]:
    """key -> bytes of each object in a bucket's tar.gz (directories are
    skipped); refused whole when a member is another kind of file or its
    name could leave the bucket."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for m in tar.getmembers():
                if m.isdir():
                    continue  # a key's prefix: S3 has no directories
                parts = m.name.split("/")
                if not m.isfile() or m.name.startswith("/") or ".." in parts or "" in parts:
                    raise ServiceProblem(f"refusing the bucket archive's member {m.name!r}")
                fh = tar.extractfile(m)
                assert fh is not None  # a regular file
                out[m.name] = fh.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
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

    async def _server(self, app: str) -> tuple[S3Server | ClusterBuckets, str]:
        """Where the app's bucket is read and written: this servicehost's
        own server, or a cluster's filers (servicehost/s3cluster.py)."""
        svc = self.host.state.get(app, "s3")
        if svc is None:
            raise ServiceProblem(f"app {app!r} has no bucket on this servicehost")
        return await self.host.s3.store(), svc.database

    async def pull(self, msg: BucketPull) -> Msg:
        app = check_app(msg.app)
        async with self.host.lock(app, "s3"):
            server, bucket = await self._server(app)
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
            server, bucket = await self._server(app)
            kept = self.host.backup_path(app, "s3")
            top = f"{server.buckets_dir}/{bucket}"
            try:
                await server.archive(bucket, kept)
                await asyncio.to_thread(self._replace, server, top, wanted)
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
        self, server: S3Server | ClusterBuckets, top: str, wanted: dict[str, bytes]
    ) -> None:
        def url(key: str) -> str:
            return f"{server.filer()}{urllib.parse.quote(f'{top}/{key}', safe='/')}"

        for path, _size in list(server.walk(top)):
            if path[len(top) + 1 :] not in wanted:
                _send("DELETE", url(path[len(top) + 1 :]))
        for key, data in wanted.items():
            _send("PUT", url(key), data)
