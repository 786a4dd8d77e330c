"""Pulling one backup and staging it, with the facts its drill will check.

Each kind is pulled from its source (roost.backups.sources) into a fresh
directory under DATA/backupd/staging/<id>/, after checking that the disk
has room: a full disk fails the backup before anything is pulled, never
truncates one. What was pulled is described there and then (facts): a
pg_dump in an exported snapshot with its tables' row counts and checksums
(roost.backups.pgfacts), an RDB over SYNC with its hash and keys as
redis-check-rdb reads them, a data directory unpacked (files and
directories only) with every file's hash, and the app's S3 bucket with it
(each object's key, size and hash), a git bundle with its refs, the
platform's files with their hashes. A base backup is Barman's, staged in
place (roost.backups.clusters).
"""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from roost.backups import bucketmeta, drill
from roost.backups.images import stage_images
from roost.backups.layout import Layout
from roost.backups.locations import run_tool
from roost.backups.pgfacts import FactsError, dump_with_facts
from roost.backups.restic import free_bytes
from roost.backups.sources import Pullers, source_id
from roost.wire.messages import BackupKind, RedisSource

TOOL_TIMEOUT_S = 3600.0
# How much of the staging disk stays free beyond what a backup needs.
STAGING_RESERVE = 256 << 20


class BackupFailed(Exception):
    pass


class NothingToBackUp(Exception):
    """The source exists and holds nothing yet (a repository without a
    commit): the backup is recorded as skipped, with this reason."""


@dataclass
class Staged:
    root: Path  # restic saves `paths` relative to it
    facts: dict[str, Any]
    source: str = ""
    database: str = ""
    paths: list[str] = field(default_factory=lambda: ["."])
    # where jobs.py writes facts.json, relative to `root` (outside `paths`
    # when staged in place: then it is backed up beside them)
    facts_path: str = "facts.json"
    # absolute glob patterns left out of the snapshot (restic's --exclude)
    exclude: list[Path] = field(default_factory=list)


# (servicehost, staging directory, reason) -> a base backup, staged
PgBase = Callable[[str, Path, str], Awaitable[Staged]]


@dataclass
class Stager:
    layout: Layout
    pullers: Pullers
    # a base backup of one servicehost's cluster (clusters.py)
    pgbase: PgBase | None = None

    async def stage(
        self, kind: BackupKind, app: str, host: str, staging: Path, reason: str
    ) -> Staged:
        staging.mkdir(parents=True, exist_ok=True)
        staging.chmod(0o700)
        free = await asyncio.to_thread(free_bytes, staging)
        if free < STAGING_RESERVE:
            raise BackupFailed(f"{free} bytes free for staging; nothing was pulled")
        if kind == "pgbase":
            if self.pgbase is None:
                raise BackupFailed("base backups are not available on this backupd")
            return await self.pgbase(host, staging, reason)
        if kind == "platform":
            return await self._platform(staging)
        if kind == "git":
            return await self._git(app, staging)
        w = self.pullers.where(app)
        if w is None:
            raise BackupFailed(self.pullers.missing(app, "service or data directory"))
        if kind == "pgdump":
            if w.postgres is None:
                raise BackupFailed(self.pullers.missing(app, "database"))
            try:
                db = await dump_with_facts(w.postgres, w.database, staging / "db.dump")
            except (psycopg.Error, FactsError) as exc:
                # The source is down, refuses us, or pg_dump failed: a failed
                # backup with the reason, not an exception out of the job.
                raise BackupFailed(f"{app}'s database could not be dumped: {exc}") from None
            return Staged(staging, msgspec.to_builtins(db), w.host, w.database)
        if kind == "redis":
            if w.redis is None:
                raise BackupFailed(self.pullers.missing(app, "Redis"))
            return await self._redis(w.redis, w.host, staging)
        if kind == "data":
            facts: dict[str, Any] = {}
            if w.data:
                tree = await _unpacked(await self.pullers.pull_data(w, app), staging / "data")
                facts["manifest"] = await asyncio.to_thread(drill.manifest, tree)
            if w.bucket:
                # The app's S3 bucket goes with its files: BackupKind's values
                # are fixed within a protocol. An empty bucket is backed up too.
                pulled = await self.pullers.pull_bucket(w, app)
                got = await _unpacked(pulled, staging / "bucket")
                facts["bucket"] = await asyncio.to_thread(drill.bucket_manifest, got)
                # Objects' metadata lives in the archive's PAX headers, which
                # unpacking drops: kept beside the objects (bucketmeta).
                try:
                    meta = await asyncio.to_thread(bucketmeta.of_archive, pulled)
                except bucketmeta.BadBucketMeta as exc:
                    raise BackupFailed(f"{app}'s bucket: {exc}") from None
                await asyncio.to_thread(bucketmeta.write, staging, meta)
                facts["bucket_meta"] = bucketmeta.facts(meta)
            return Staged(staging, facts, w.host)
        raise BackupFailed(f"unknown kind {kind}")

    async def _redis(self, src: RedisSource, host: str, staging: Path) -> Staged:
        rdb = staging / "dump.rdb"
        argv = ["redis-cli", "-h", src.host, "-p", str(src.port), "--user", src.user]
        # The password through the environment: a command line is for all to read.
        done = await run_tool(
            [*argv, "--rdb", str(rdb)], timeout=TOOL_TIMEOUT_S, env={"REDISCLI_AUTH": src.password}
        )
        if done.returncode != 0 or not rdb.exists():
            out = (done.stderr or done.stdout.decode(errors="replace")).strip()[-500:]
            raise BackupFailed(f"the RDB could not be pulled: {out}")
        checked = await run_tool(["redis-check-rdb", str(rdb)], timeout=TOOL_TIMEOUT_S)
        report = checked.stdout.decode(errors="replace") + checked.stderr
        if checked.returncode != 0:
            raise BackupFailed(f"the pulled RDB does not check: {report.strip()[-500:]}")
        facts: dict[str, Any] = {"sha256": await asyncio.to_thread(drill.sha256_file, rdb)}
        facts.update(drill.rdb_facts(report))
        return Staged(staging, facts, host)

    async def _git(self, app: str, staging: Path) -> Staged:
        bundle = await self.pullers.bundle(app)
        if not bundle:
            # An app's first push: the gateway made the repository, and no
            # ref moves until its pre-receive hook's deploy succeeded.
            raise NothingToBackUp(f"{app}'s repository has no commit yet: nothing to back up")
        path = staging / "repo.bundle"
        path.write_bytes(bundle)
        return Staged(staging, await asyncio.to_thread(drill.git_facts, path), "gateway")

    async def _platform(self, staging: Path) -> Staged:
        snap = await self.pullers.platform()
        root = staging / "platform"
        for rel, data in snap.files.items():
            dest = _inside(root, rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        for src in self.pullers.seen.values():
            if src.state_json:
                dest = _inside(root, f"servicehosts/{source_id(src)}.json")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(src.state_json)
        await stage_images(self.pullers.node, self.pullers.cluster, self.layout, root)
        facts = {
            "files": await asyncio.to_thread(drill.file_hashes, root),
            "schema_version": snap.schema_version,
        }
        return Staged(staging, facts, "controller")


def _inside(root: Path, rel: str) -> Path:
    """root/rel, refusing a path that would leave root."""
    dest = (root / rel).resolve()
    if not rel or rel.startswith("/") or not dest.is_relative_to(root.resolve()):
        raise BackupFailed(f"refusing the file name {rel!r}")
    return root / rel


async def _unpacked(archive: bytes, into: Path) -> Path:
    """A pulled archive unpacked into the new directory `into` (0700)."""
    into.mkdir(mode=0o700)
    await asyncio.to_thread(_unpack, archive, into)
    return into


def _unpack(archive: bytes, into: Path) -> None:
    """A data directory's archive, as files and directories only, inside `into`."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        tar.extractall(into, filter="data")
