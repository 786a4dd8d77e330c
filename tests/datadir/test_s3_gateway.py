"""A cluster's S3 gateway (roost.datadir.s3gateway) and the servicehost's
buckets through it (roost.servicehost.s3cluster), real: two filers sharing
a PostgreSQL store, a host's filer front, `weed s3` given that front as
weedplan renders it. Buckets are made as the servicehost makes them in a
cluster (the key through `weed shell` s3.configure, the bucket a directory
of the filers' /.buckets, which the gateway serves), with the guard
identity beside them; one app's key is refused on another's bucket; an
object written through the gateway is read back through it after the first
filer is SIGKILLed, and a write goes on; a fresh servicehost takes on the
bucket as a host restore does (`take_on`: found, its deleted identity put
again, its objects as they were); then a removal's final backup holds the
app's objects, its key is refused and its bucket gone."""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.datadir import s3cluster, s3gateway, seaweed, weedplan
from roost.datadir.s3cluster import Gateways
from roost.datadir.seaweed import Endpoint
from roost.servicehost.s3 import ServiceProblem
from roost.servicehost.s3cluster import ClusterBuckets
from roost.servicehost.state import HostState, Service
from roost.wire.messages import RUNNER_S3_HOST
from tests.conftest import wait_until
from tests.datadir.s3kit import client, listening, refused
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


def test_buckets_made_through_a_gateway_on_its_front_outlive_the_first_filer(
    shared: Cluster, tmp_path: Path
) -> None:
    second = shared.add_filer("filer2", ip="127.0.0.2")
    front = shared.front("front", [shared.filer, second])
    at = Endpoint("127.0.0.1", weed_port())
    shared.start("s3", s3gateway.argv(seaweed.weed_binary(), at, front))
    wait_until(lambda: listening(at), 60, "the S3 gateway")
    gateways = Gateways(gateway=at, filer=front, masters=(shared.master,))
    state = HostState()
    buckets = ClusterBuckets(gateways, state, lambda: None)

    shop_svc = asyncio.run(buckets.provision("shop", "shop"))
    blog_svc = asyncio.run(buckets.provision("blog", "blog"))
    assert asyncio.run(buckets.provision("shop", "shop")) == shop_svc  # asked again
    creds = buckets.credentials(shop_svc)
    assert creds.url == f"http://{RUNNER_S3_HOST}:{at.port}" and creds.host == RUNNER_S3_HOST
    identities = listed(front, s3cluster.IDENTITIES_DIR)
    assert {f"{s3cluster.GUARD_NAME}.json", f"app-shop-{shop_svc.username}.json"} <= identities
    # Another servicehost of the cluster (its own state) cannot take the bucket.
    with pytest.raises(ServiceProblem, match="held by another app"):
        asyncio.run(ClusterBuckets(gateways, HostState(), lambda: None).provision("shop", "shop"))

    shop, blog = _client(at, shop_svc), _client(at, blog_svc)
    shop.put_object(Bucket="shop", Key="media/up.jpg", Body=b"jpeg")
    blog.put_object(Bucket="blog", Key="post.txt", Body=b"post")
    # Out of the apps' names: every host mounts the tree's root at ROOT.
    assert weedplan.BUCKETS_FOLDER == "/.buckets"
    assert {"shop", "blog"} <= listed(shared.filer, "/.buckets")
    assert "buckets" not in listed(shared.filer, "/")
    assert refused(lambda: blog.get_object(Bucket="shop", Key="media/up.jpg"), "AccessDenied")
    assert refused(lambda: blog.put_object(Bucket="shop", Key="x", Body=b"x"), "AccessDenied")
    assert refused(lambda: blog.create_bucket(Bucket="other"), "AccessDenied")

    shared.kill("filer")  # the first filer's host dies
    body = shop.get_object(Bucket="shop", Key="media/up.jpg")["Body"].read()
    assert body == b"jpeg"
    shop.put_object(Bucket="shop", Key="media/after.jpg", Body=b"after")
    assert shop.get_object(Bucket="shop", Key="media/after.jpg")["Body"].read() == b"after"
    assert "after.jpg" in listed(second, "/.buckets/shop/media")
    assert refused(lambda: blog.get_object(Bucket="shop", Key="media/after.jpg"), "AccessDenied")

    # shop's servicehost lost, a fresh one takes on its record (adopt.py):
    # bucket and identity found in the tree, nothing made, no object lost;
    # its identity gone too, it is put again (as a provision would).
    fresh = HostState(services={state.key("shop", "s3"): shop_svc})
    taker = ClusterBuckets(gateways, fresh, lambda: None)
    before = listed(second, "/.buckets/shop/media")
    assert asyncio.run(taker.take_on(shop_svc))
    asyncio.run(taker._riding(taker._shell, s3gateway.remove_script(s3cluster.app_key(
        "shop", shop_svc.username, shop_svc.password, "shop"))))  # fmt: skip
    wait_until(lambda: refused(lambda: shop.list_objects_v2(Bucket="shop"), "InvalidAccessKeyId"),
               10, "shop's key refused")  # fmt: skip
    assert asyncio.run(taker.take_on(shop_svc))  # asked again
    assert f"app-shop-{shop_svc.username}.json" in listed(second, s3cluster.IDENTITIES_DIR)
    assert listed(second, "/.buckets/shop/media") == before
    assert shop.get_object(Bucket="shop", Key="media/up.jpg")["Body"].read() == b"jpeg"

    # Removal, through the second filer now: the final backup holds the
    # objects, the deleted key is refused by the running gateway, the
    # bucket is gone, and the other app's key and bucket are untouched.
    dest = tmp_path / "blog-final.tar.gz"
    assert asyncio.run(buckets.remove("blog", dest))
    with tarfile.open(dest) as tar:
        member = tar.extractfile("post.txt")
        assert member is not None and member.read() == b"post"
    assert dest.stat().st_mode & 0o777 == 0o600
    assert refused(lambda: blog.list_objects_v2(Bucket="blog"), "InvalidAccessKeyId")
    assert "blog" not in listed(second, "/.buckets")
    assert state.get("blog", "s3") is None
    assert not asyncio.run(buckets.remove("blog", dest))  # asked again: nothing to remove
    assert shop.get_object(Bucket="shop", Key="media/up.jpg")["Body"].read() == b"jpeg"


def _client(at: Endpoint, svc: Service) -> Any:
    return client(at, svc.username, svc.password)
