"""The S3 service's decisions, pure: bucket names, the gateway's identities,
the server's command line, the app's environment and bundle_config."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from unittest import mock

import pytest

from roost.appspec.bundle_config import from_environment
from roost.appspec.service_env import service_environment, with_service_addresses
from roost.controller.services import bucket_fields
from roost.datadir import s3plan
from roost.datadir.s3plan import BadBucketName, Key, bucket_name, identities, taken_by
from roost.wire.messages import BucketCredentials, ServiceCredentials

ADMIN = Key("roost-servicehost", "ADMINKEYADMINKEY0000", "admin-secret-admin-secret")


@pytest.mark.parametrize(
    ("app", "bucket"),
    [("notes", "notes"), ("my_app", "my-app"), ("a1b", "a1b"), ("x" * 48, "x" * 48),
     ("a-b_c9", "a-b-c9")],
)  # fmt: skip
def test_bucket_names_map(app: str, bucket: str) -> None:
    assert bucket_name(app) == bucket


@pytest.mark.parametrize(
    ("app", "why"),
    [
        ("ab", "3 to 63 characters"),
        ("a", "3 to 63 characters"),
        ("-app", "starts and ends with a letter or digit"),
        ("app_", "starts and ends with a letter or digit"),
        ("App", "lowercase"),
        ("a.b", "lowercase"),
        ("xn--app", "reserves"),
        ("sthree-x", "reserves"),
        ("pics-s3alias", "reserves"),
        ("pics--ol-s3", "reserves"),
    ],
)
def test_bucket_names_refused(app: str, why: str) -> None:
    with pytest.raises(BadBucketName, match=why) as exc:
        bucket_name(app)
    assert repr(app) in str(exc.value)


def test_two_apps_mapping_to_one_bucket() -> None:
    owners = {"my-app": "my-app"}
    assert taken_by(bucket_name("my_app"), "my_app", owners) == "my-app"
    assert taken_by("my-app", "my-app", owners) == ""
    assert taken_by("other", "other", owners) == ""


def test_identities_limit_each_key_to_its_bucket() -> None:
    a = Key("app-a", "AKEYAKEYAKEYAKEY0001", "secret-a-secret-a-secret", "bucket-a")
    b = Key("app-b", "BKEYBKEYBKEYBKEY0002", "secret-b-secret-b-secret", "bucket-b")
    doc = identities(ADMIN, [b, a])
    ids = doc["identities"]
    assert isinstance(ids, list)
    assert [i["name"] for i in ids] == ["roost-servicehost", "app-a", "app-b"]
    assert "Admin" in ids[0]["actions"]
    assert ids[1] == {
        "name": "app-a",
        "credentials": [{"accessKey": a.access_key, "secretKey": a.secret_key}],
        "actions": ["Read:bucket-a", "Write:bucket-a", "List:bucket-a", "Tagging:bucket-a"],
    }
    # No app has an action that is not limited to its own bucket.
    for ident in ids[1:]:
        bucket = "bucket-a" if ident["name"] == "app-a" else "bucket-b"
        assert all(act.endswith(":" + bucket) for act in ident["actions"])
    assert json.loads(s3plan.render(doc)) == doc


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (Key("app-a", "AKEYAKEYAKEYAKEY0001", "secret-a-secret-a-secret", ""), "no bucket"),
        (Key("app-a", "AKEY", "secret-a-secret-a-secret", "bucket-a"), "access key"),
        (Key("app-a", "AKEYAKEYAKEYAKEY0001", 'x"}], "actions": ["Admin', "bkt"), "secret key"),
        (Key("app-a", ADMIN.access_key, "secret-a-secret-a-secret", "bucket-a"), "not unique"),
        (Key("app-a", "AKEYAKEYAKEYAKEY0001", "secret-a-secret-a-secret", "B_1"), "cannot have"),
    ],
)
def test_identities_refuse_what_is_not_a_key(key: Key, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        identities(ADMIN, [key])


def test_server_argv_names_every_port_and_no_default_one() -> None:
    ports = s3plan.Ports(*range(31000, 31008))
    argv = s3plan.server_argv("/bin/weed", Path("/d/s3"), "127.0.0.1", ports, Path("/d/s3/i.json"))
    assert argv[:3] == ["/bin/weed", "-logdir=/d/s3/log", "server"]
    for port in ports.all():
        assert sum(a.endswith(f"={port}") for a in argv) == 1
    assert "-s3.config=/d/s3/i.json" in argv and "-s3" in argv and "-filer" in argv
    # Iceberg and Lance would take their fixed default ports.
    assert "-s3.port.iceberg=0" in argv and "-s3.port.lance=0" in argv
    assert "-s3.autoCreateBucket=false" in argv
    assert "-ip.bind=127.0.0.1" in argv
    # Its HTTP sockets in its own directory, not /tmp (grpc_sockets: no flag moves those).
    assert "-filer.localSocket=/d/s3/filer.sock" in argv and "-s3.localSocket=/d/s3/s3.sock" in argv


def test_app_environment_and_bundle_config() -> None:
    bucket = BucketCredentials(
        app="pics", host="127.0.0.1", port=31000, bucket="pics",
        access_key="AKEYAKEYAKEYAKEY0001", secret_key="s3cret-s3cret-s3cret",
        url=s3plan.endpoint_url("127.0.0.1", 31000),
    )  # fmt: skip
    # As the controller keeps and opens them (controller/services.py).
    creds = ServiceCredentials(**bucket_fields(bucket))
    env = with_service_addresses(service_environment([creds]), [creds])
    assert env["AWS_ACCESS_KEY_ID"] == "AKEYAKEYAKEYAKEY0001"
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3cret-s3cret-s3cret"
    assert env["AWS_STORAGE_BUCKET_NAME"] == env["S3_BUCKET"] == "pics"
    assert env["AWS_S3_ENDPOINT_URL"] == "http://127.0.0.1:31000"
    assert env["AWS_DEFAULT_REGION"]
    # The runner's firewall lets the app reach the gateway's port, no other.
    assert env["ROOST_SERVICE_ADDRESSES"] == "127.0.0.1:31000"
    config = from_environment(env, data_directory="/d", version=3)
    assert config["s3"] == {
        "endpoint_url": "http://127.0.0.1:31000", "bucket": "pics",
        "access_key": "AKEYAKEYAKEYAKEY0001", "secret_key": "s3cret-s3cret-s3cret",
        "region": env["AWS_DEFAULT_REGION"],
    }  # fmt: skip
    assert "s3" not in from_environment({}, data_directory="/d", version=3)
    assert s3plan.endpoint_url("fd00::1", 8333) == "http://[fd00::1]:8333"


def test_signature_is_botocores() -> None:
    """The servicehost's own SigV4 (to check a revoked key is refused)
    signs as botocore does, to the byte."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now = 1796600000.0
    ours = s3plan.signed_headers("HEAD", "127.0.0.1:31000", "/pics", "AKEY0001", "s3cr3t", now)
    req = AWSRequest(method="HEAD", url="http://127.0.0.1:31000/pics")
    auth = S3SigV4Auth(Credentials("AKEY0001", "s3cr3t"), "s3", s3plan.REGION)
    at = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=at):
        auth.add_auth(req)
    assert ours["Authorization"] == req.headers["Authorization"]


def test_a_put_with_metadata_is_signed_as_botocore_signs_it() -> None:
    """A restore's PutObject: its payload's hash, its content type, user
    metadata and tags signed, to the byte as botocore signs them."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now, body = 1796600000.0, b"meow" * 100
    extra = {
        "Content-Type": "image/jpeg",
        "Cache-Control": "max-age=60,  public",
        "x-amz-meta-color": "red",
        "x-amz-tagging": "t1=v%201&t2=v2",
    }
    ours = s3plan.signed_headers(
        "PUT", "127.0.0.1:31000", "/pics/a b/cat~1.jpg", "AKEY0001", "s3cr3t", now, body, extra
    )
    assert ours["Cache-Control"] == "max-age=60, public"  # sent as signed
    url = "http://127.0.0.1:31000/pics/a%20b/cat~1.jpg"
    req = AWSRequest(method="PUT", url=url, data=body, headers=dict(extra))
    auth = S3SigV4Auth(Credentials("AKEY0001", "s3cr3t"), "s3", s3plan.REGION)
    at = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=at):
        auth.add_auth(req)
    assert req.headers["X-Amz-Content-SHA256"] == ours["x-amz-content-sha256"]
    assert ours["Authorization"] == req.headers["Authorization"]


def test_ready_once_the_master_knows_every_volume() -> None:
    def master(node: dict[str, object]) -> dict[str, object]:
        return {"Topology": {"DataCenters": [{"Racks": [{"DataNodes": [node]}]}]}}

    held = {"Volumes": [{"Id": 1}, {"Id": 2}]}
    url = "127.0.0.1:31003"
    assert s3plan.volumes_known(held, master({"Url": url, "Volumes": 2}), url)
    assert not s3plan.volumes_known(held, master({"Url": url, "Volumes": 0}), url)
    assert not s3plan.volumes_known(held, master({"Url": "other:1", "Volumes": 2}), url)
    assert not s3plan.volumes_known(held, {"Topology": {}}, url)
    assert s3plan.volumes_known({"Volumes": None}, master({"Url": url, "Volumes": 0}), url)


def test_stale_grpc_sockets_are_cleared_live_ones_kept(tmp_path: Path) -> None:
    """A killed weed's socket (nothing answers) goes before a start; one a
    live process listens on stays (roost.servicehost.s3)."""
    import socket

    from roost.servicehost.s3 import _clear_stale

    stale, live, plain = tmp_path / "stale.sock", tmp_path / "live.sock", tmp_path / "plain"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # closed without unlink: as after a SIGKILL
    plain.write_text("not a socket")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(live))
        listener.listen(1)
        _clear_stale([stale, live, plain, tmp_path / "absent.sock"])
        assert not stale.exists() and live.is_socket() and plain.read_text() == "not a socket"
    ports = s3plan.Ports(*range(31000, 31008))
    assert [p.name for p in s3plan.grpc_sockets(ports)] == [
        "seaweedfs-master-grpc-31002.sock", "seaweedfs-volume-grpc-31004.sock",
        "seaweedfs-s3-grpc-31007.sock",
    ]  # fmt: skip
