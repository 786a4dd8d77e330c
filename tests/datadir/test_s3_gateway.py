"""A cluster's S3 gateway (roost.datadir.s3gateway), real: two filers
sharing a PostgreSQL store, a host's filer front, `weed s3` given that
front as weedplan renders it. An object written through the gateway is
read back through it after the first filer is SIGKILLed, and a write goes
on; buckets are in the filers' /.buckets (no app's name); identities are
the filers' (/etc/iam): one app's key is refused on another's bucket, and
a deleted identity is refused by the running gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.datadir import s3gateway, seaweed, weedplan
from roost.datadir.seaweed import Endpoint
from tests.conftest import wait_until
from tests.datadir.s3kit import ADMIN, app_key, configure, key_client, listening, refused
from tests.datadir.seaweedkit import (
    Cluster,
    listed,
    postgres_store_cluster,
    weed_port,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Cluster]:
    """Filers keeping the tree in one PostgreSQL store, made as a controller makes it."""
    with postgres_store_cluster(tmp_path) as c:
        yield c


def test_a_gateway_through_its_front_reads_and_writes_after_the_first_filer_dies(
    shared: Cluster,
) -> None:
    second = shared.add_filer("filer2", ip="127.0.0.2")
    front = shared.front("front", [shared.filer, second])
    for key in (ADMIN, app_key("shop"), app_key("blog")):
        configure(shared.master, front, key)
    at = Endpoint("127.0.0.1", weed_port())
    shared.start("s3", s3gateway.argv(seaweed.weed_binary(), at, front))
    wait_until(lambda: listening(at), 60, "the S3 gateway")
    admin = key_client(at, ADMIN)
    wait_until(lambda: not refused(lambda: admin.list_buckets(), "InvalidAccessKeyId"),
               30, "the gateway to load the filers' identities")  # fmt: skip
    for app in ("shop", "blog"):
        admin.create_bucket(Bucket=app)
    shop, blog = key_client(at, app_key("shop")), key_client(at, app_key("blog"))
    shop.put_object(Bucket="shop", Key="media/up.jpg", Body=b"jpeg")
    # Out of the apps' names: every host mounts the tree's root at ROOT.
    assert weedplan.BUCKETS_FOLDER == "/.buckets"
    assert {"shop", "blog"} <= listed(shared.filer, "/.buckets")
    assert "buckets" not in listed(shared.filer, "/")
    assert refused(lambda: blog.get_object(Bucket="shop", Key="media/up.jpg"), "AccessDenied")
    assert refused(lambda: blog.put_object(Bucket="shop", Key="x", Body=b"x"), "AccessDenied")

    shared.kill("filer")  # the first filer's host dies
    body = shop.get_object(Bucket="shop", Key="media/up.jpg")["Body"].read()
    assert body == b"jpeg"
    shop.put_object(Bucket="shop", Key="media/after.jpg", Body=b"after")
    assert shop.get_object(Bucket="shop", Key="media/after.jpg")["Body"].read() == b"after"
    assert "after.jpg" in listed(second, "/.buckets/shop/media")
    assert refused(lambda: blog.get_object(Bucket="shop", Key="media/after.jpg"), "AccessDenied")

    # A deleted identity is dropped by the running gateway (not merged as a
    # -config file's HUP is): the one-machine case's revoke rule is not needed.
    configure(shared.master, second, app_key("blog"), remove=True)
    wait_until(
        lambda: refused(lambda: blog.list_objects_v2(Bucket="blog"), "InvalidAccessKeyId"),
        30, "the deleted key refused",
    )  # fmt: skip
