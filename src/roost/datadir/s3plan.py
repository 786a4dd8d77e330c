"""An S3 bucket per app, served by SeaweedFS (pure: names, identities, argv).

Apps written the Heroku way (django-storages, boto3) store files in a
bucket, not a directory. `[services] s3 = true` (or `roost services add
s3`) gives an app one bucket of its own and an access key that reaches only
that bucket: a SeaweedFS S3 identity whose actions are each limited to it
(`Read:BUCKET`, `Write:BUCKET`, `List:BUCKET`, `Tagging:BUCKET`; no Admin,
so it can neither make, delete nor list another bucket's objects). The
servicehost's own identity (Admin) is the only other one in the file.

The S3 gateway reads its identities from one JSON file (`-s3.config`) at
its start and again on SIGHUP (measured on 4.48: a key added to the file is
refused with InvalidAccessKeyId until the HUP, accepted right after). A HUP
merges: an identity the file names replaces the one of that name, but one
the file no longer names stays in force (measured: a removed key still
wrote). So a removed app's key is never dropped from the file: it stays,
revoked (`revoked`: no action, a secret nobody was given), and the whole
file is rewritten from the servicehost's state at each change, then
SIGHUP; nothing is edited in place. Identity names carry the access key,
so an app given a bucket again gets a new identity beside its revoked one.

On one machine the servicehost runs one `weed server` with `-s3` (master,
volume, filer and gateway in one process, every port given, nothing on
weed's default ports, so that two platforms on one machine never collide;
`server_argv`), started with the first bucket and stopped with the last.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What an app's key may do, each on its own bucket only.
APP_ACTIONS = ("Read", "Write", "List", "Tagging")
ADMIN_NAME = "roost-servicehost"
# The filer's directory of buckets (SeaweedFS's default `-dir.buckets`).
BUCKETS_DIR = "/buckets"
# A region botocore accepts; SeaweedFS ignores it, but clients sign with one.
REGION = "us-east-1"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# Prefixes and suffixes AWS reserves (its bucket naming rules).
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")
_KEY = re.compile(r"^[A-Za-z0-9+/=_-]{16,128}$")


class BadBucketName(ValueError):
    """An app name that cannot be an S3 bucket's (the message says why)."""


def bucket_name(app: str) -> str:
    """The bucket of app `app`: its name with '_' as '-' (S3 allows no
    underscores), checked against S3's rules; BadBucketName when it cannot
    be one. Two apps differing only by '_' versus '-' map to one bucket: the
    servicehost refuses the second (`taken_by`)."""
    name = app.replace("_", "-")
    why = ""
    if not 3 <= len(name) <= 63:
        why = "a bucket name has 3 to 63 characters"
    elif not _BUCKET.match(name):
        why = (
            "a bucket name has lowercase letters, digits and '-', and starts and ends "
            "with a letter or digit"
        )
    elif name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        why = "S3 reserves its prefix or suffix"
    if why:
        raise BadBucketName(
            f"app {app!r} cannot have an S3 bucket: its name maps to {name!r}, and {why}"
        )
    return name


def taken_by(bucket: str, app: str, owners: dict[str, str]) -> str:
    """The other app already holding `bucket` ("" when none): `owners` is
    bucket -> app of every bucket this servicehost keeps."""
    owner = owners.get(bucket, app)
    return "" if owner == app else owner


@dataclass(frozen=True)
class Key:
    """One identity of the gateway's file: an app's (its bucket) or the
    servicehost's (bucket "": Admin)."""

    name: str
    access_key: str
    secret_key: str
    bucket: str = ""


def identity_name(app: str, access_key: str) -> str:
    return f"app-{app}-{access_key}"


def identities(admin: Key, apps: Iterable[Key], revoked: Iterable[Key] = ()) -> dict[str, object]:
    """The gateway's `-s3.config` document: the admin, each app's key
    limited to its bucket, then the revoked keys with no action. Keys are
    checked to be tokens (they come from our own state, but a broken one
    must not reach the file); ValueError if not."""
    out: list[dict[str, object]] = [_identity(admin, ["Admin", *APP_ACTIONS])]
    seen = {admin.access_key}
    for key in sorted(apps, key=lambda k: k.name):
        if not key.bucket:
            raise ValueError(f"identity {key.name!r} has no bucket: only the admin has none")
        bucket_name(key.bucket)  # a bucket name as S3 has it
        if key.access_key in seen:
            raise ValueError(f"access key of {key.name!r} is not unique")
        seen.add(key.access_key)
        out.append(_identity(key, [f"{a}:{key.bucket}" for a in APP_ACTIONS]))
    for key in sorted(revoked, key=lambda k: k.name):
        if key.access_key in seen:
            raise ValueError(f"access key of {key.name!r} is both in force and revoked")
        seen.add(key.access_key)
        out.append(_identity(key, []))
    return {"identities": out}


def check_key(key: Key) -> None:
    """ValueError unless both halves of `key` are tokens."""
    for what, value in (("access key", key.access_key), ("secret key", key.secret_key)):
        if not _KEY.match(value):
            raise ValueError(f"{what} of {key.name!r} is not a 16 to 128 character token")


def _identity(key: Key, actions: list[str]) -> dict[str, object]:
    check_key(key)
    return {
        "name": key.name,
        "credentials": [{"accessKey": key.access_key, "secretKey": key.secret_key}],
        "actions": actions,
    }


def render(doc: dict[str, object]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Ports:
    """Every port the one-machine `weed server` listens on (state.json keeps
    them: the S3 one is in every app's AWS_S3_ENDPOINT_URL)."""

    s3: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3_grpc: int

    def all(self) -> list[int]:
        return [
            self.s3, self.master, self.master_grpc, self.volume,
            self.volume_grpc, self.filer, self.filer_grpc, self.s3_grpc,
        ]  # fmt: skip


def server_argv(weed: str, directory: Path, ip: str, ports: Ports, config: Path) -> list[str]:
    """One `weed server` holding the buckets of this servicehost's apps:
    master, one volume server, a filer (its embedded store) and the S3
    gateway, all on `ip` (loopback on one machine), every port given."""
    p = ports
    return [
        weed, f"-logdir={directory / 'log'}", "server",
        f"-dir={directory / 'data'}", f"-ip={ip}", f"-ip.bind={ip}",
        f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}",
        # Small volumes, grown on demand: one machine's disk is shared.
        "-master.volumeSizeLimitMB=64", "-volume.max=0",
        f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}",
        "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={p.filer}", f"-filer.port.grpc={p.filer_grpc}",
        f"-filer.localSocket={directory / 'filer.sock'}",
        "-s3", f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}", f"-s3.config={config}",
        f"-s3.localSocket={directory / 's3.sock'}",
        # Off: their default ports (8181, 9101) would collide between platforms.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        # Only the servicehost makes buckets (the admin key would anyway).
        "-s3.autoCreateBucket=false",
    ]  # fmt: skip


def grpc_sockets(ports: Ports) -> list[Path]:
    """The unix sockets weed makes beside its gRPC ports, in /tmp, whatever
    its flags (none moves them). One left by a weed that was killed, owned
    by another user, cannot be replaced (sticky /tmp): the master then never
    listens (measured). The servicehost clears stale ones before a start."""
    return [
        Path(f"/tmp/seaweedfs-master-grpc-{ports.master_grpc}.sock"),
        Path(f"/tmp/seaweedfs-volume-grpc-{ports.volume_grpc}.sock"),
        Path(f"/tmp/seaweedfs-s3-grpc-{ports.s3_grpc}.sock"),
    ]


def endpoint_url(host: str, port: int) -> str:
    h = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{h}:{port}"


def signed_headers(
    method: str,
    host: str,
    path: str,
    access_key: str,
    secret: str,
    now: float,
    payload: bytes = b"",
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """AWS Signature V4 headers for a request with no query: a HEAD /BUCKET
    (whether a key still opens a bucket) or a PUT /BUCKET/KEY of `payload`
    with `headers` (a restore's object, its metadata and tags), without an
    S3 client library at run time. Every header given is signed and
    returned with its value as signed (spaces folded, as SigV4 has them)."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    day = amz_date[:8]
    digest = hashlib.sha256(payload).hexdigest()
    out = {k: " ".join(v.split()) for k, v in (headers or {}).items()}
    out.update({"Host": host, "x-amz-content-sha256": digest, "x-amz-date": amz_date})
    canon = sorted((k.lower(), v) for k, v in out.items())
    signed = ";".join(k for k, _ in canon)
    canonical = "\n".join([
        method, urllib.parse.quote(path, safe="/~"), "",
        *(f"{k}:{v}" for k, v in canon), "",
        signed, digest,
    ])  # fmt: skip
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    k = ("AWS4" + secret).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return out


def volumes_known(volume_status: dict[str, Any], master_status: dict[str, Any], url: str) -> bool:
    """Whether the master knows every volume the volume server `url` holds
    (its `/status` and the master's `/dir/status`, parsed): until its first
    heartbeat after a start, reads of stored objects fail (InternalError,
    1.4 s measured after a restart), though the gateway answers."""
    held = len(volume_status.get("Volumes") or [])
    topology = master_status.get("Topology") or {}
    for dc in topology.get("DataCenters") or []:
        for rack in dc.get("Racks") or []:
            for node in rack.get("DataNodes") or []:
                if node.get("Url") == url:
                    return int(node.get("Volumes", 0)) >= held
    return False
