"""An S3 bucket per app through the whole one-machine platform: apps that ask
for `[services] s3 = true` store and read objects with boto3 from their
environment alone; one app's key, used from inside it, opens nothing of
another's bucket; removing the service keeps every object in its final
backup and ends the key (roost.servicehost.s3)."""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import wait_until
from tests.e2e.platform import Platform, running_platform
from tests.netns import own_network_namespace

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent / "s3_app"


def _at(p: Platform, app: str, path: str, method: str = "GET", body: bytes = b"") -> httpx.Response:
    return httpx.request(
        method, f"http://127.0.0.1:{p.router_port}{path}", content=body or None,
        headers={"Host": f"{app}.localhost"}, timeout=30,
    )  # fmt: skip


@pytest.fixture
def platform() -> Iterator[Platform]:
    """A platform with the real firewall (a tenant reaches its own services'
    host:port and no other platform port), in a network namespace of its
    own as tests/security's: the machine's table is not this test's."""
    with contextlib.ExitStack() as stack:
        outside = stack.enter_context(own_network_namespace(f"roost-s3-{os.getpid()}"))
        yield stack.enter_context(running_platform({"ROOST_FIREWALL": "on", **outside.env}))


def test_each_app_opens_its_own_bucket_alone(platform: Platform) -> None:
    p = platform
    for app in ("pics", "docs"):
        p.roost("apps", "create", app)
        out = p.roost("deploy", str(HERE), "--app", app).stdout
        assert "provisioned s3" in out
    for app in ("pics", "docs"):
        wait_until(lambda a=app: _at(p, a, "/config").status_code == 200, 120, app)  # type: ignore[misc]
    # Its bucket, from the AWS variables and bundle_config alike.
    assert _at(p, "pics", "/config").json() == {"bucket": "pics", "bundle": "pics"}

    # One request uploads through the app, another reads it back.
    put = _at(p, "pics", "/files/a/cat.txt", "PUT", b"meow")
    assert put.status_code == 201, p.roost("logs", "--app", "pics", check=False).stdout[-3000:]
    got = _at(p, "pics", "/files/a/cat.txt")
    assert (got.status_code, got.content) == (200, b"meow")
    assert _at(p, "docs", "/files/own.txt", "PUT", b"docs").status_code == 201

    # The attack, from inside the other app with its own key: refused.
    for method in ("GET", "PUT"):
        r = _at(p, "docs", "/other/pics/a/cat.txt", method, b"overwritten")
        assert (r.status_code, r.text) == (403, "AccessDenied"), method
    # (the same route opens its own bucket: it is the key that is refused)
    assert _at(p, "docs", "/other/docs/own.txt").status_code == 200
    assert _at(p, "pics", "/files/a/cat.txt").content == b"meow"

    # The owner sees the key as the other services' credentials are shown.
    info = json.loads(p.roost("services", "info", "s3", "--json", "--app", "pics").stdout)
    assert info["database"] == "pics" and info["url"].startswith("http://127.0.0.1:")
    pics = boto3.client(
        "s3", endpoint_url=info["url"], aws_access_key_id=info["username"],
        aws_secret_access_key=info["password"], region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )  # fmt: skip
    assert pics.get_object(Bucket="pics", Key="a/cat.txt")["Body"].read() == b"meow"

    # Removal: every object in the final backup, then the key ends.
    out = p.roost("services", "remove", "s3", "--yes", "--json", "--app", "pics").stdout
    backup = Path(json.loads(out)["backup"])
    with tarfile.open(backup) as tar:
        member = tar.extractfile("a/cat.txt")
        assert member is not None and member.read() == b"meow"
    with pytest.raises(ClientError) as refused:
        pics.get_object(Bucket="pics", Key="a/cat.txt")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    kinds = json.loads(p.roost("services", "list", "--json", "--app", "pics").stdout)
    assert "s3" not in {s["kind"] for s in kinds}
    # The other app keeps its bucket.
    assert _at(p, "docs", "/files/own.txt").content == b"docs"
