"""Objects' metadata through backupd's unpacked snapshot of a bucket (pure,
files only): read from the pulled archive, kept beside the objects, proven
by the drill, packed again for the servicehost (roost.backups.bucketmeta)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from roost.backups import bucketmeta
from roost.backups.drill import bucket_manifest, bucket_problems
from roost.datadir import s3meta
from roost.servicehost.bucketbackup import Stored, objects_of

META = {"Content-Type": "text/x-special", "X-Amz-Meta-Color": "red", "X-Amz-Tagging-t1": "v1"}


def pulled() -> bytes:
    """A bucket's archive as the servicehost answers BucketPull."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data, meta in (("a/m.txt", b"meta", META), ("plain", b"none", {})):
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(data), s3meta.to_pax(meta)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Rec:
    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts


def test_metadata_survives_the_snapshot_and_the_drill_proves_it(tmp_path: Path) -> None:
    archive = pulled()
    meta = bucketmeta.of_archive(archive)
    assert meta == {"a/m.txt": META}
    # As staging would: the objects unpacked, the metadata beside them.
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path / "bucket", filter="data")
    bucketmeta.write(tmp_path, meta)
    rec = _Rec(
        {"bucket": bucket_manifest(tmp_path / "bucket"), "bucket_meta": bucketmeta.facts(meta)}
    )
    assert bucket_problems(rec, tmp_path) == []
    # Packed again for a restore: what the servicehost reads is what was pulled.
    again = bucketmeta.pack(tmp_path / "bucket", bucketmeta.read(tmp_path))
    assert objects_of(again) == {"a/m.txt": Stored(b"meta", META), "plain": Stored(b"none", {})}
    # A snapshot whose metadata differs, or went, is named by the drill.
    (tmp_path / bucketmeta.FILE).write_text(json.dumps({"a/m.txt": {"Content-Type": "x/y"}}))
    assert bucket_problems(rec, tmp_path) == ["bucket metadata: 1 differ: a/m.txt"]
    (tmp_path / bucketmeta.FILE).unlink()
    assert bucket_problems(rec, tmp_path) == ["bucket metadata: 1 missing: a/m.txt"]
    # A backup from before records none and its snapshot has none: proven as before.
    assert bucket_problems(_Rec({"bucket": rec.facts["bucket"]}), tmp_path) == []
    assert bucketmeta.read(tmp_path) == {}


@pytest.mark.parametrize(
    "text",
    ["[1]", '{"k": "v"}', '{"k": {"X-Amz-Meta-A": "a\\r\\nb"}}', '{"k": {"Owner": "x"}}', "{"],
)
def test_a_bad_metadata_file_is_a_problem_not_a_restore(tmp_path: Path, text: str) -> None:
    (tmp_path / "bucket").mkdir()
    (tmp_path / bucketmeta.FILE).write_text(text)
    with pytest.raises(bucketmeta.BadBucketMeta):
        bucketmeta.read(tmp_path)
    rec = _Rec({"bucket": {}, "bucket_meta": {}})
    [problem] = bucket_problems(rec, tmp_path)
    assert problem.startswith("bucket metadata: ")
