"""The filer and gateway requests of apps' buckets, shared by one machine's
`weed server` (s3.py) and a cluster's gateways (s3cluster.py): a bucket is
a directory of the filer's buckets folder, made, read whole, walked and
deleted through the filer's HTTP; whether a key opens its bucket is what a
gateway answers to a HEAD signed with it (s3plan.signed_headers)."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import os
import secrets
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from roost.datadir import s3meta, s3plan

log = logging.getLogger("roost.servicehost")

HTTP_TIMEOUT_S = 10.0
KEY_WAIT_S = 10.0  # how long a gateway may take to follow a key's change
# A directory's mode bit in the filer's JSON listing (Go's os.ModeDir).
_MODE_DIR = 1 << 31


class S3Problem(Exception):
    """The server or its filer refused or did not answer."""


class ServiceProblem(Exception):
    """A request refused (the servicehost answers it as an Error)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def new_key(length: int = 20) -> str:
    """An access key: uppercase letters and digits, as AWS's look."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_secret() -> str:
    return secrets.token_urlsafe(30)


async def make_bucket(filer: str, path: str) -> None:
    """The bucket's directory at `path` made on the filer at `filer` (its
    URL), as the gateway's own CreateBucket makes it; made already is done."""
    await asyncio.to_thread(_call, "POST", f"{filer}{_q(path)}/")


async def delete_bucket(filer: str, path: str) -> None:
    """The bucket's directory deleted with every object; gone already is done."""
    await asyncio.to_thread(_call, "DELETE", f"{filer}{_q(path)}?recursive=true")


async def key_opens(
    at: str, bucket: str, access_key: str, secret: str, want: bool, timeout: float
) -> bool:
    """Wait until the key opens `bucket` (`want`) or is refused (not `want`),
    as the gateway at `at` (host:port) answers a signed HEAD; whether it did
    within `timeout`. A gateway takes a key change a moment after it is
    made: nothing is told to the app (a new key) or deleted (a removed one)
    before the gateway says so."""
    path = f"/{bucket}"
    deadline = time.monotonic() + timeout
    while True:
        headers = s3plan.signed_headers("HEAD", at, path, access_key, secret, time.time())
        status = await asyncio.to_thread(_head, f"http://{at}{path}", headers)
        if (status == 200) == want and status in (200, 403):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


def put_object(
    at: str, bucket: str, key: str, data: bytes, meta: dict[str, str], access_key: str, secret: str
) -> None:
    """Object `key` of `bucket` written whole through the gateway at `at`
    (host:port), with its metadata and tags (`meta`, checked already),
    signed with the bucket's key: the filer's HTTP would drop both."""
    path = f"/{bucket}/{key}"
    headers = s3plan.signed_headers(
        "PUT", at, path, access_key, secret, time.time(), data, s3meta.put_headers(meta)
    )
    host, port = at.rsplit(":", 1)
    # http.client, not urllib: urllib gives a body without a type a form's
    # type, which the gateway would keep as the object's.
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("PUT", _q(path), body=data, headers=headers)
        resp = conn.getresponse()
        answer = resp.read()
    except http.client.HTTPException as exc:  # not an OSError: a garbled answer
        raise S3Problem(f"the gateway's answer to PUT {key!r} does not read: {exc!r}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise S3Problem(f"the gateway answered {resp.status} to PUT {key!r}: {answer[:300]!r}")


def archive_to(filer: str, top: str, dest: Path) -> int:
    """Every file under `top` on the filer at `filer` (its URL) into a tar.gz
    at `dest` (0600), each read whole and its size checked, its metadata in
    its member's PAX headers (s3meta); its size."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with (
        os.fdopen(fd, "wb") as fh,
        tarfile.open(fileobj=fh, mode="w:gz", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path, size, entry in _entries(filer, top):
            data = get(f"{filer}{_q(path)}", True)
            if len(data) != size:
                raise S3Problem(f"{path}: read {len(data)} bytes of {size}")
            meta, dropped = s3meta.of_entry(entry)
            if dropped:
                log.warning("%s: metadata not kept (a restore could not put it): %s", path, dropped)
            info = tarfile.TarInfo(path[len(top) + 1 :])
            info.size, info.mtime, info.mode = size, int(time.time()), 0o600
            info.pax_headers = s3meta.to_pax(meta)
            tar.addfile(info, io.BytesIO(data))
    return dest.stat().st_size


def walk(filer: str, directory: str) -> Iterator[tuple[str, int]]:
    """(path, size) of every file under `directory` on the filer at `filer`."""
    for path, size, _entry in _entries(filer, directory):
        yield path, size


def _entries(filer: str, directory: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(path, size, listing entry) of every file under `directory`."""
    last = ""
    while True:
        query = urllib.parse.urlencode({"limit": 1000, "lastFileName": last})
        body = get(f"{filer}{_q(directory)}/?{query}", True, True)
        entries = json.loads(body or b"{}").get("Entries") or []
        for e in entries:
            path = str(e["FullPath"])
            if int(e.get("Mode", 0)) & _MODE_DIR:
                yield from _entries(filer, path)
            else:
                yield path, int(e.get("FileSize", 0)), e
        if len(entries) < 1000:
            return
        last = str(entries[-1]["FullPath"]).rsplit("/", 1)[-1]


def _q(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def _call(method: str, url: str) -> None:
    # No body: a POST with one (even empty, form-encoded) is an upload to the filer.
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        # Idempotent: a bucket made already (409), one deleted already (404).
        if (method, exc.code) not in (("POST", 409), ("DELETE", 404)):
            raise S3Problem(f"the filer answered {exc.code} to {method}") from None


def _head(url: str, headers: dict[str, str]) -> int:
    """The HTTP status of a HEAD (0: no answer)."""
    req = urllib.request.Request(url, method="HEAD", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def get(url: str, strict: bool, listing: bool = False) -> bytes:
    """GET `url`. `strict`: only a 200 counts (the filer's); else any HTTP
    answer does (the gateway's probe: its / is 403 without a signature)."""
    headers = {"Accept": "application/json"} if listing else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        if strict:
            raise S3Problem(f"the filer answered {exc.code}") from None
        return b""


async def final_backup(
    app: str, bucket: str, dest: Path, archive: Callable[[str, Path], Awaitable[int]]
) -> None:
    """A removal's first step: every object into `dest` by `archive`, or
    ServiceProblem saying nothing was removed."""
    try:
        size = await archive(bucket, dest)
    except (OSError, S3Problem, ValueError) as exc:
        raise ServiceProblem(
            f"could not take the final backup of bucket {bucket}; nothing was removed: {exc}"
        ) from None
    log.info("final backup of %s's bucket %s: %s (%d bytes)", app, bucket, dest, size)
