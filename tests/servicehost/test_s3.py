"""Apps' S3 buckets on a real servicehost: a real `weed server -s3`, a real
S3 client (boto3), over the servicehost's RPC endpoint as the controller
speaks to it (roost.servicehost.s3)."""

from __future__ import annotations

import asyncio
import json
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from roost.wire.messages import (
    BucketCredentials,
    BucketDeprovision,
    BucketProvision,
    BucketRemoved,
)
from roost.wire.rpc import RemoteError
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sh() -> Iterator[Servicehost]:
    yield from Servicehost().running()


async def provision(sh: Servicehost, app: str) -> BucketCredentials:
    reply = await sh.call(BucketProvision(app=app))
    assert isinstance(reply, BucketCredentials), reply
    return reply


def client(c: BucketCredentials) -> Any:
    return boto3.client(
        "s3", endpoint_url=c.url, aws_access_key_id=c.access_key,
        aws_secret_access_key=c.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )  # fmt: skip


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as exc:
        call(*args, **kwargs)
    return str(exc.value.response["Error"]["Code"])


def weeds(sh: Servicehost) -> list[psutil.Process]:
    """The servicehost's weed server (its cwd is DATA/servicehost/s3)."""
    here = str(sh.data / "servicehost" / "s3")
    found = []
    for p in psutil.process_iter(["name", "cwd"]):
        if p.info["name"] == "weed" and p.info["cwd"] == here:
            found.append(p)
    return found


async def test_each_key_opens_its_own_bucket_only(sh: Servicehost) -> None:
    assert weeds(sh) == []  # no bucket, no server
    pics = await provision(sh, "pics_app")
    docs = await provision(sh, "docs")
    assert (pics.bucket, docs.bucket) == ("pics-app", "docs")
    assert pics.port == docs.port and pics.url == f"http://127.0.0.1:{pics.port}"
    assert pics.access_key != docs.access_key and pics.secret_key != docs.secret_key
    assert await provision(sh, "pics_app") == pics  # idempotent
    [server] = weeds(sh)
    assert server.uids().real != 0  # as the service user, as PostgreSQL and Redis

    p, d = client(pics), client(docs)
    p.put_object(Bucket="pics-app", Key="a/cat.jpg", Body=b"meow")
    assert p.get_object(Bucket="pics-app", Key="a/cat.jpg")["Body"].read() == b"meow"
    d.put_object(Bucket="docs", Key="readme", Body=b"docs")
    # The other app's key: refused on every verb, whatever the key it names.
    assert refused(d.get_object, Bucket="pics-app", Key="a/cat.jpg") == "AccessDenied"
    assert refused(d.put_object, Bucket="pics-app", Key="x", Body=b"x") == "AccessDenied"
    assert refused(d.list_objects_v2, Bucket="pics-app") == "AccessDenied"
    assert refused(d.delete_object, Bucket="pics-app", Key="a/cat.jpg") == "AccessDenied"
    assert refused(d.create_bucket, Bucket="new-one") == "AccessDenied"
    assert refused(d.delete_bucket, Bucket="docs") == "AccessDenied"
    assert [b["Name"] for b in d.list_buckets()["Buckets"]] == ["docs"]
    # The servicehost's state keeps the secret; the gateway's file is its alone.
    ids = sh.data / "servicehost" / "s3" / "identities.json"
    assert ids.stat().st_mode & 0o077 == 0
    assert pics.secret_key in ids.read_text()

    # A name S3 cannot take, and two apps on one bucket, change nothing.
    with pytest.raises(RemoteError, match="cannot have an S3 bucket"):
        await provision(sh, "ab")
    with pytest.raises(RemoteError, match="would share bucket pics-app"):
        await provision(sh, "pics-app")
    state = json.loads((sh.data / "servicehost" / "state.json").read_text())
    assert sorted(state["services"]) == ["s3/docs", "s3/pics_app"]

    # A full stop ends the server with the others (harness: nothing of DATA
    # outlives it); the next start serves the same keys and objects.
    assert await asyncio.to_thread(sh.stop) == 0
    sh.start()
    await sh.wait_postgres_up()
    assert await provision(sh, "docs") == docs
    assert p.get_object(Bucket="pics-app", Key="a/cat.jpg")["Body"].read() == b"meow"
    # A hand-over leaves the server serving; the next daemon adopts it.
    [server] = weeds(sh)
    assert await asyncio.to_thread(sh.end, signal.SIGUSR2) == 0
    assert p.get_object(Bucket="pics-app", Key="a/cat.jpg")["Body"].read() == b"meow"
    sh.start()
    await sh.wait_postgres_up()
    assert await provision(sh, "docs") == docs
    assert [w.pid for w in weeds(sh)] == [server.pid], sh.tail()

    # Removal: every object in the final backup, then the key opens nothing.
    removed = await sh.call(BucketDeprovision(app="pics_app"), timeout=120)
    assert isinstance(removed, BucketRemoved) and removed.backup_path.endswith(".tar.gz")
    with tarfile.open(removed.backup_path) as tar:
        member = tar.extractfile("a/cat.jpg")
        assert member is not None and member.read() == b"meow"
    assert Path(removed.backup_path).stat().st_mode & 0o077 == 0
    assert refused(p.get_object, Bucket="pics-app", Key="a/cat.jpg") == "SignatureDoesNotMatch"
    assert d.get_object(Bucket="docs", Key="readme")["Body"].read() == b"docs"
    again = await sh.call(BucketDeprovision(app="pics_app"), timeout=120)
    assert again == removed  # a repeated request: the same answer
    # The last bucket gone, the server goes too.
    await sh.call(BucketDeprovision(app="docs"), timeout=120)
    assert weeds(sh) == []
    # No secret in any log: the daemon's, the server's output, weed's own.
    logs = [sh.log, *(sh.data / "servicehost" / "logs").iterdir()]
    logs += [f for f in (sh.data / "servicehost" / "s3" / "log").iterdir() if f.is_file()]
    for f in logs:
        text = f.read_text(errors="replace")
        assert pics.secret_key not in text and docs.secret_key not in text, f
