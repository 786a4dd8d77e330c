"""Proof: facts taken at backup time, and their comparison with a restored copy.

Theory of operation. Every backup carries facts about what it holds, taken
from what was pulled before it went into the repository: per-file SHA-256
for data directories and the platform's files, the refs of a git bundle,
the SHA-256 and key count of a Redis RDB (PostgreSQL's row counts and
per-table checksums are `roost.backups.pgfacts`'). The drill restores the
backup *from the repository* into scratch (a directory, a scratch Redis or
PostgreSQL) and takes the same facts again; the comparisons here say what
differs, in words. An empty list is the only verdict that marks a backup
verified.

The comparisons are pure; the fact takers read files and run `git`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
# How many differences a verdict spells out before it says "and N more".
SHOWN = 5


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ directories


def manifest(root: Path) -> dict[str, str]:
    """relative path -> "file <sha256> <mode>", "link <target>" or "dir <mode>".

    Symlinks are recorded as links, never followed (a data directory is the
    tenant's: a link may point anywhere); other special files are named as
    such so a difference shows.
    """
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            mode = f"{stat.S_IMODE(st.st_mode):o}"
            if stat.S_ISLNK(st.st_mode):
                out[rel] = f"link {os.readlink(path)}"
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"dir {mode}"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = f"file {sha256_file(path)} {mode}"
            else:
                out[rel] = f"special {stat.S_IFMT(st.st_mode):o}"
    return out


def _listed(what: str, names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{what}: {shown}{more}"


def compare_manifests(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """What the restored tree (or set of files) lacks, has extra, or holds differently."""
    problems = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(p for p in set(expected) & set(actual) if expected[p] != actual[p])
    if missing:
        problems.append(_listed(f"{len(missing)} missing", missing))
    if extra:
        problems.append(_listed(f"{len(extra)} not in the backup", extra))
    if changed:
        problems.append(_listed(f"{len(changed)} differ", changed))
    return problems


# ------------------------------------------------------------------ git


class DrillError(Exception):
    pass


def _git(*args: str, cwd: Path | None = None) -> str:
    r = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    if r.returncode != 0:
        raise DrillError(f"git {args[0]} failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return r.stdout


def bundle_refs(bundle: Path) -> dict[str, str]:
    """ref -> object id, as `git bundle list-heads` reads them from the bundle
    (HEAD aside: a symbolic name, not a ref a clone lists)."""
    refs = {}
    for line in _git("bundle", "list-heads", str(bundle)).splitlines():
        oid, _, ref = line.partition(" ")
        if ref.startswith("refs/"):
            refs[ref] = oid
    return refs


def git_facts(bundle: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(bundle), "refs": bundle_refs(bundle)}


def clone_and_check(bundle: Path, into: Path) -> dict[str, str]:
    """Clone the bundle (a mirror) into `into` and `git fsck` it: the refs it has.

    A bundle that lists its heads but whose objects do not hold together
    fails here, not on the day someone needs it.
    """
    _git("clone", "--quiet", "--mirror", str(bundle), str(into))
    _git("fsck", "--full", "--no-progress", cwd=into)
    refs = {}
    for line in _git("for-each-ref", "--format=%(objectname) %(refname)", cwd=into).splitlines():
        oid, _, ref = line.partition(" ")
        refs[ref] = oid
    return refs


def compare_refs(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(actual))
    if missing:
        problems.append(_listed(f"{len(missing)} refs missing", missing))
    moved = sorted(r for r in set(expected) & set(actual) if expected[r] != actual[r])
    if moved:
        problems.append(_listed(f"{len(moved)} refs point elsewhere", moved))
    return problems


# ------------------------------------------------------------------ Redis


def compare_redis(expected: Mapping[str, Any], sha256: str, keys: int) -> list[str]:
    """The restored RDB's hash and the key count a scratch Redis loaded from it."""
    problems = []
    if expected.get("sha256") != sha256:
        problems.append(
            f"the RDB's SHA-256 is {sha256[:12]}, {str(expected.get('sha256'))[:12]} when taken"
        )
    if int(expected.get("keys", -1)) != keys:
        problems.append(f"{keys} keys loaded, {expected.get('keys')} when taken")
    return problems


# ------------------------------------------------------------------ files (platform)


def file_hashes(root: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every regular file under root."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def verdict(problems: list[str]) -> str:
    """One line for the catalog and the event: "" when nothing differs."""
    return "; ".join(problems)
