"""An object's metadata through a bucket's backup (pure): what the filer's
listing gives, what an archive member keeps, what a restore puts back, and
what a hostile archive cannot make it put (roost.datadir.s3meta and
bucketbackup.objects_of)."""

from __future__ import annotations

import base64
import io
import tarfile

import pytest

from roost.datadir import s3meta
from roost.servicehost.bucketbackup import Stored, objects_of
from roost.servicehost.s3filer import ServiceProblem


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


# As weed 4.48's filer lists an object boto3 put with ContentType, Metadata,
# Tagging, CacheControl and ContentDisposition (measured).
ENTRY = {
    "FullPath": "/buckets/pics/a/cat.jpg",
    "Mime": "image/jpeg",
    "Extended": {
        "Cache-Control": b64("max-age=60"),
        "Content-Disposition": b64('attachment; filename="cat.jpg"'),
        "X-Amz-Meta-Color": b64("red"),
        "X-Amz-Tagging-t1": b64("v 1&x=é"),
        "Seaweed-X-Amz-ETag": b64("abc"),
        "Seaweed-X-Amz-Owner": b64("someone"),
        "x-seaweedfs-checksum-sha256": b64(b"\x00\x01"),
    },
}
META = {
    "Content-Type": "image/jpeg",
    "Cache-Control": "max-age=60",
    "Content-Disposition": 'attachment; filename="cat.jpg"',
    "X-Amz-Meta-Color": "red",
    "X-Amz-Tagging-t1": "v 1&x=é",
}


def test_the_listing_gives_what_is_kept_and_never_the_filers_own() -> None:
    assert s3meta.of_entry(ENTRY) == (META, [])
    assert s3meta.of_entry({"FullPath": "/b/x"}) == ({}, [])  # nothing put
    # What a restore could not put back is dropped and named, the rest kept.
    odd = {"Extended": {"X-Amz-Meta-Bin": b64(b"\xff"), "X-Amz-Meta-Nl": b64("a\nb"),
                        "X-Amz-Tagging-a/b": b64("v"), "X-Amz-Meta-Ok": "not base64!"}}  # fmt: skip
    meta, dropped = s3meta.of_entry(odd)
    assert meta == {}
    assert sorted(dropped) == [
        "X-Amz-Meta-Bin",
        "X-Amz-Meta-Nl",
        "X-Amz-Meta-Ok",
        "X-Amz-Tagging-a/b",
    ]


def test_a_restore_puts_metadata_as_headers_and_tags_url_encoded() -> None:
    assert s3meta.put_headers(META) == {
        "Cache-Control": "max-age=60",
        "Content-Disposition": 'attachment; filename="cat.jpg"',
        "Content-Type": "image/jpeg",
        "x-amz-meta-color": "red",
        "x-amz-tagging": "t1=v%201%26x%3D%C3%A9",
    }
    assert s3meta.put_headers({}) == {}


def archive(members: dict[str, tuple[bytes, dict[str, str]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, pax) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(data), pax
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_an_archive_member_keeps_its_metadata_and_an_old_one_has_none() -> None:
    got = objects_of(archive({
        "a/cat.jpg": (b"meow", s3meta.to_pax(META)),
        "old.txt": (b"before metadata was kept", {}),
    }))  # fmt: skip
    assert got == {
        "a/cat.jpg": Stored(b"meow", META),
        "old.txt": Stored(b"before metadata was kept", {}),
    }


@pytest.mark.parametrize(
    "pax",
    [
        {"ROOST.s3.X-Amz-Meta-Color": "red\r\nX-Evil: 1"},  # a header smuggled in
        {"ROOST.s3.Seaweed-X-Amz-Owner": "me"},  # not one kept
        {"ROOST.s3.X-Amz-Meta-a b": "v"},  # not a token
        {"ROOST.s3.Authorization": "AWS4-HMAC-SHA256 ..."},
        {"ROOST.s3.X-Amz-Meta-Big": "x" * (s3meta.MAX_VALUE + 1)},
        {"ROOST.s3.X-Amz-Meta-Utf": "caf\u00e9"},  # a header's value is ASCII
        {f"ROOST.s3.X-Amz-Meta-N{i}": "v" for i in range(s3meta.MAX_NAMES + 1)},
    ],
)
def test_a_member_with_bad_metadata_refuses_the_whole_archive(pax: dict[str, str]) -> None:
    bad = archive({"good.txt": (b"ok", {}), "bad.txt": (b"x", pax)})
    with pytest.raises(ServiceProblem, match=r"refusing the bucket archive's member 'bad\.txt'"):
        objects_of(bad)
