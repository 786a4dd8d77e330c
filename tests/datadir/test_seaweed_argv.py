"""The options of roost.datadir.seaweed's argv that correctness rests on (pure).

bench/datadir.py measured the tuning options: FUSE writeback cache, volume
preallocation and -asyncDio changed the CPU a written MB costs by no more
than the noise, larger chunks (4 and 8 MB) doubled the volume servers'
share, and only encrypted volume data lowered it (no MD5 of each chunk in
both volume servers), so it alone is set; these keep the options the
guarantees need from being traded away for speed."""

from __future__ import annotations

from pathlib import Path

from roost.datadir import seaweed
from roost.datadir.seaweed import Endpoint

AT = Endpoint("10.0.0.1", 7150)


def test_every_file_is_kept_twice(tmp_path: Path) -> None:
    # The master's default and the filer's (which weed mount's writes take)
    # both say two copies on two servers.
    assert "-defaultReplication=001" in seaweed.master_argv("weed", AT, tmp_path)
    assert "-defaultReplicaPlacement=001" in seaweed.filer_argv("weed", AT, AT, tmp_path)


def test_the_mount_keeps_no_writes_of_its_own(tmp_path: Path) -> None:
    argv = seaweed.mount_argv("weed", AT, tmp_path / "m", tmp_path / "c")
    # FUSE's writeback cache would hold written pages in this host's kernel
    # (and trust its own idea of a file's size over another runner's
    # writes); a mount-wide -replication would override the filer's 001.
    assert not [a for a in argv if a.startswith(("-writebackCache", "-replication"))]
    assert "-allowOthers" in argv and "-umask=000" in argv


def test_a_listing_answers_missing_for_one_second_at_most(tmp_path: Path) -> None:
    # Past it, a name is looked up in the filer's store, which every create
    # that returned is in: another host's file is seen at once
    # (tests/cluster/test_shared_datadir.py), whichever filer took it.
    argv = seaweed.mount_argv("weed", AT, tmp_path / "m", tmp_path / "c")
    assert "-cacheMetaTtlSec=1" in argv


def test_chunks_are_sealed_by_the_mount_not_hashed_by_each_copy(tmp_path: Path) -> None:
    # The filer tells every mount to encrypt its chunks (AES-GCM, a key per
    # chunk in the filer's store): a ciphered chunk carries no Content-MD5,
    # which both volume servers would otherwise hash again (bench/datadir.py:
    # 11-12 CPU-ms a written MB instead of 15-16).
    assert "-encryptVolumeData" in seaweed.filer_argv("weed", AT, AT, tmp_path)


def test_the_masters_elect_a_leader_within_seconds(tmp_path: Path) -> None:
    # A new leader assigns nothing for 15 s after its election (weed's
    # warm-up): the sooner it is elected, the sooner writes go on after the
    # leader's host dies (tests/cluster/test_shared_datadir_filers.py).
    assert "-electionTimeout=4s" in seaweed.master_argv("weed", AT, tmp_path)


def test_a_mount_s_socket_path_is_weed_s_own() -> None:
    # Measured with weed 4.48: `weed mount -dir=/tmp/sxw/mnt` listened on this.
    argv = ["weed", "mount", "-filer=10.0.0.1:7150", "-dir=/tmp/sxw/mnt", "-allowOthers"]
    assert seaweed.mount_socket(argv) == Path("/tmp/seaweedfs-mount-1181130712.sock")
    # The first four bytes of this one's MD5 read negative: made positive.
    assert seaweed.mount_socket(["weed", "mount", "-dir=/m/c"]) == Path(
        "/tmp/seaweedfs-mount-1997351262.sock"
    )
    given = ["weed", "mount", "-dir=/m", "-localSocket=/run/m.sock"]
    assert seaweed.mount_socket(given) == Path("/run/m.sock")
    assert seaweed.mount_socket(["weed", "filer", "-port=7153"]) is None
