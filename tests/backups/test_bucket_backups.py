"""An app's S3 bucket backed up with its data directory and restored: a real
servicehost with its `weed server -s3`, boto3 as the app, backupd's real
pieces with a local restic repository and its drills
(roost.servicehost.bucketbackup, the "data" kind in roost.backups)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from roost.backups.daemon import Backupd
from roost.backups.drill import bucket_manifest, bucket_problems, manifest
from roost.controller.store import Store
from roost.wire.messages import (
    BackupHostRestore,
    BackupHostRestored,
    BackupRestore,
    BackupRestored,
    BucketArchive,
    BucketCredentials,
    BucketProvision,
    BucketPull,
    BucketRestore,
    BucketRestored,
)
from roost.wire.rpc import RemoteError
from tests.backups.backupdkit import backupd_and_controller, servicehost_and_base
from tests.images.helpers import make_tar
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e

OBJECTS = {"a.txt": b"first\n", "photos/b.bin": bytes(range(256)) * 50}


@pytest.fixture
async def world() -> AsyncIterator[tuple[Servicehost, Backupd, Store]]:
    async with servicehost_and_base("roost-bucketbackup-") as (sh, base):
        assert sh.backupd_keys is not None
        async with backupd_and_controller(base, sh.backupd_keys, [sh.endpoint]) as (backupd, ctl):
            yield sh, backupd, ctl


def s3(c: BucketCredentials) -> Any:
    return boto3.client(
        "s3", endpoint_url=c.url, aws_access_key_id=c.access_key,
        aws_secret_access_key=c.secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )  # fmt: skip


def contents(c: BucketCredentials) -> dict[str, bytes]:
    client = s3(c)
    listed = client.list_objects_v2(Bucket=c.bucket).get("Contents", [])
    return {
        o["Key"]: client.get_object(Bucket=c.bucket, Key=o["Key"])["Body"].read() for o in listed
    }


async def test_a_bucket_is_backed_up_proven_and_restored_whole(
    world: tuple[Servicehost, Backupd, Store],
) -> None:
    sh, backupd, ctl = world
    creds = await sh.call(BucketProvision(app="pics"))
    empty = await sh.call(BucketProvision(app="docs"))
    assert isinstance(creds, BucketCredentials) and isinstance(empty, BucketCredentials)
    owner = ctl.create_account_hashed("a@example.com", "x")
    ctl.create_app("pics", owner)
    ctl.create_app("docs", owner)
    for key, data in OBJECTS.items():
        s3(creds).put_object(Bucket=creds.bucket, Key=key, Body=data)
    # One object with metadata and tags: kept through the snapshot (bucketmeta).
    s3(creds).put_object(Bucket=creds.bucket, Key="a.txt", Body=OBJECTS["a.txt"], **A_META)
    a_seen = seen(creds, "a.txt")
    assert a_seen == ({"ContentType": "text/x-special", "CacheControl": "max-age=60",
                       "ContentDisposition": None, "Metadata": {"color": "red"}},
                      [{"Key": "t1", "Value": "v1"}])  # fmt: skip
    files = sh.data / "servicehost" / "appdata" / "pics"
    files.mkdir(parents=True, exist_ok=True)
    (files / "notes.txt").write_bytes(b"kept with the bucket\n")
    tree = manifest(files)

    [entry] = await backupd.jobs.capture("pics", "capture")
    assert entry.kind == "data" and entry.state == "taken", entry
    rec = await backupd.jobs.followup(entry.id)
    assert rec.entry.state == "verified", rec.entry
    assert sorted(rec.facts["bucket"]) == sorted(OBJECTS)
    assert sorted(rec.facts["bucket_meta"]) == ["a.txt"]  # the only one with metadata
    assert rec.facts["bucket"]["photos/b.bin"].startswith(f"{len(OBJECTS['photos/b.bin'])} ")
    # A bucket with no object is a backup too (and an app without files).
    [nothing] = await backupd.jobs.capture("docs", "capture")
    assert (await backupd.jobs.followup(nothing.id)).facts == {"bucket": {}, "bucket_meta": {}}

    # The app changes its objects and files after the backup.
    client = s3(creds)
    client.delete_object(Bucket=creds.bucket, Key="a.txt")
    client.put_object(Bucket=creds.bucket, Key="photos/b.bin", Body=b"overwritten")
    client.put_object(Bucket=creds.bucket, Key="new/since.txt", Body=b"made after")
    (files / "notes.txt").write_bytes(b"changed\n")

    reply = await backupd.handlers()(BackupRestore(app="pics", backup_id=entry.id))
    assert isinstance(reply, BackupRestored), reply
    assert "data directory and S3 bucket" in reply.message and reply.safety_backup
    # Replaced whole, as the data directory is: exactly the objects backed up,
    # with their metadata and tags.
    assert contents(creds) == OBJECTS
    assert seen(creds, "a.txt") == a_seen
    assert manifest(files) == tree
    # What it replaced is in the safety backup, the objects made since too.
    safety = backupd.jobs.catalog.get(reply.safety_backup)
    assert sorted(safety.facts["bucket"]) == ["new/since.txt", "photos/b.bin"]

    # An archive that is not one, or would write outside the bucket: refused
    # by the servicehost before any object changes.
    for archive in (b"not a tar.gz", make_tar({"../escape": b"x"})):
        with pytest.raises(RemoteError, match="bucket archive"):
            await sh.as_backupd(BucketRestore(app="pics", restore_id="r1", archive=archive))
    assert contents(creds) == OBJECTS
    await metadata_comes_back(sh, creds)

    # The servicehost's disk is lost: a host restore brings each bucket back
    # with the key the app holds, its objects from the newest verified backup.
    platform = await backupd.jobs.backup("platform", "", "capture")
    assert (await backupd.jobs.followup(platform.id)).entry.state == "verified"
    sh.stop()
    shutil.rmtree(sh.data / "servicehost")
    sh.start()
    await sh.wait_postgres_up()
    done = await backupd.handlers()(BackupHostRestore(host="servicehost"))
    assert isinstance(done, BackupHostRestored), done
    reports = {(r.app, r.kind): r for r in done.reports}
    assert reports[("pics", "data")].backup_id == entry.id, done.reports
    assert all(r.ok for r in done.reports), done.reports
    assert contents(creds) == OBJECTS and contents(empty) == {}
    assert seen(creds, "a.txt") == a_seen
    assert manifest(files) == tree


A_META = {
    "ContentType": "text/x-special", "CacheControl": "max-age=60",
    "Metadata": {"color": "red"}, "Tagging": "t1=v1",
}  # fmt: skip


def seen(c: BucketCredentials, key: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """An object's content type, cache and disposition headers, user
    metadata and tags, as the app reads them."""
    client = s3(c)
    head = client.head_object(Bucket=c.bucket, Key=key)
    kept = {k: head.get(k) for k in ("ContentType", "CacheControl", "ContentDisposition")}
    tags = client.get_object_tagging(Bucket=c.bucket, Key=key)["TagSet"]
    return {**kept, "Metadata": head["Metadata"]}, sorted(tags, key=lambda t: t["Key"])


async def metadata_comes_back(sh: Servicehost, creds: BucketCredentials) -> None:
    """A pulled archive keeps each object's content type, headers, user
    metadata and tags, and a restore puts them back (through the gateway,
    signed with the app's key); the object made for it is gone after."""
    client, b = s3(creds), creds.bucket
    put = {
        "ContentType": "text/x-special", "CacheControl": "max-age=60",
        "ContentDisposition": 'attachment; filename="m.txt"',
        "Metadata": {"color": "red", "owner": "ann"}, "Tagging": "t1=v1&t2=v%202",
    }  # fmt: skip
    client.put_object(Bucket=b, Key="meta/m.txt", Body=b"with metadata", **put)
    odd = "odd/a b!(1)+é~'*,;=@$&.txt"  # signed as the gateway reads its path
    client.put_object(Bucket=b, Key=odd, Body=b"odd")

    before = seen(creds, "meta/m.txt")
    assert before[0] == {k: v for k, v in put.items() if k != "Tagging"}
    assert before[1] == [{"Key": "t1", "Value": "v1"}, {"Key": "t2", "Value": "v 2"}]
    pulled = await sh.as_backupd(BucketPull(app="pics"))
    assert isinstance(pulled, BucketArchive), pulled
    client.put_object(Bucket=b, Key="meta/m.txt", Body=b"plain now")
    client.delete_object(Bucket=b, Key="a.txt")
    client.delete_object(Bucket=b, Key=odd)
    done = await sh.as_backupd(BucketRestore(app="pics", restore_id="m1", archive=pulled.archive))
    assert isinstance(done, BucketRestored), done
    assert seen(creds, "meta/m.txt") == before
    assert client.get_object(Bucket=b, Key="meta/m.txt")["Body"].read() == b"with metadata"
    assert contents(creds) == {**OBJECTS, "meta/m.txt": b"with metadata", odd: b"odd"}
    client.delete_object(Bucket=b, Key="meta/m.txt")
    client.delete_object(Bucket=b, Key=odd)


class _Rec:
    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts


def test_the_drill_names_an_object_whose_bytes_or_size_differ(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    (root / "photos").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"first\n")
    (root / "photos" / "b.bin").write_bytes(b"0123456789")
    facts = {"bucket": bucket_manifest(root)}
    assert bucket_problems(_Rec(facts), tmp_path) == []
    assert bucket_problems(_Rec({}), tmp_path) == []  # a backup without a bucket
    (root / "photos" / "b.bin").write_bytes(b"0123456780")  # same size, other bytes
    (root / "a.txt").unlink()
    (root / "extra").write_bytes(b"")
    problems = bucket_problems(_Rec(facts), tmp_path)
    assert problems == [
        "bucket objects: 1 missing: a.txt",
        "bucket objects: 1 not in the backup: extra",
        "bucket objects: 1 differ: photos/b.bin",
    ]
