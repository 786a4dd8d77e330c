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

The comparisons are pure; the fact takers read files and run `git`;
`Drills` restores a backup from the repository and runs its kind's check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import stat
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from psycopg import sql

from roost.backups import bucketmeta
from roost.backups.layout import Layout
from roost.backups.pgfacts import DbFacts, pg_tool, run_tool, take_facts
from roost.backups.pgfacts import compare as compare_db
from roost.backups.restic import Repo
from roost.backups.scratch import scratch_postgres, scratch_redis

CHUNK = 1 << 20
DRILL_TIMEOUT_S = 6 * 3600.0
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


def rdb_facts(text: str) -> dict[str, int]:
    """Keys and keys with a TTL, as `redis-check-rdb` reports reading them."""
    out = {"keys": -1, "expires": 0}
    for line in text.splitlines():
        m = re.match(r"\[info\] (\d+) (keys read|expires)$", line.strip())
        if m:
            out["keys" if m.group(2) == "keys read" else "expires"] = int(m.group(1))
    if out["keys"] < 0:
        raise DrillError(f"redis-check-rdb did not read the RDB: {text.strip()[-500:]}")
    return out


def compare_redis(expected: Mapping[str, Any], sha256: str, keys: int) -> list[str]:
    """The restored RDB's hash, and the keys a scratch Redis loaded from it:
    all of them, but for keys with a TTL that may have expired since."""
    problems = []
    if expected.get("sha256") != sha256:
        was = str(expected.get("sha256"))[:12]
        problems.append(f"the RDB's SHA-256 is {sha256[:12]}, {was} when taken")
    taken, volatile = int(expected.get("keys", -1)), int(expected.get("expires", 0))
    if not taken - volatile <= keys <= taken:
        problems.append(f"{keys} keys loaded, {taken} when taken ({volatile} with a TTL)")
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


def sqlite_problems(path: Path) -> list[str]:
    """SQLite's own integrity check of a restored state database."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = [str(r[0]) for r in db.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        return [f"{path.name} does not open: {exc}"]
    return [] if rows == ["ok"] else [f"{path.name}: {'; '.join(rows[:SHOWN])}"]


# ------------------------------------------------------------------ the drill


# kind -> how a restored copy is checked against its facts
Check = Callable[[Any, Path, Path], Awaitable[list[str]]]


@dataclass
class Drills:
    """Restore a backup from the local repository into scratch and check it
    with its kind's check (scratch servers run under `layout`); a kind
    without a check is never verified: its drill fails saying so.
    """

    repo: Repo
    layout: Layout
    checks: dict[str, Check] = field(default_factory=dict)
    # kinds proven where they are kept, not through restic (a base backup:
    # Barman checks it against its WAL and manifest)
    direct: dict[str, Callable[[Any], Awaitable[list[str]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.checks.setdefault("pgdump", self.check_pgdump)
        self.checks.setdefault("redis", self.check_redis)
        self.checks.setdefault("data", check_data)
        self.checks.setdefault("git", check_git)
        self.checks.setdefault("platform", check_platform)

    async def __call__(self, rec: Any, scratch: Path) -> list[str]:
        if rec.entry.kind in self.direct:
            return await self.direct[rec.entry.kind](rec)
        snap = rec.snapshots.get("local", "")
        if not snap:
            return ["it has no snapshot in the local repository"]
        check = self.checks.get(rec.entry.kind)
        if check is None:
            return [f"this backupd has no drill for {rec.entry.kind} backups"]
        restored = scratch / "restored"
        restored.mkdir(parents=True, exist_ok=True)
        await self.repo.restore(snap, restored, size=rec.entry.size)
        try:
            stored = json.loads((restored / "facts.json").read_bytes())
        except (OSError, ValueError) as exc:
            return [f"its facts.json does not read back: {exc}"]
        if stored != rec.facts:
            return ["the facts in the repository are not the catalog's"]
        return await check(rec, restored, scratch)

    async def check_pgdump(self, rec: Any, restored: Path, _scratch: Path) -> list[str]:
        """pg_restore into a scratch PostgreSQL; its tables' facts must be the backup's."""
        dump = restored / "db.dump"
        # The roles its row-level security policies name exist on the source
        # (an app's own role, typically), not in a scratch cluster: made there.
        status, script = await run_tool(
            [pg_tool("pg_restore"), "--section=post-data", "-f", "-", str(dump)],
            timeout=DRILL_TIMEOUT_S,
        )
        if status != 0:
            return [f"pg_restore cannot read the dump (status {status}): {script[-1000:]}"]
        async with scratch_postgres(self.layout) as pg:
            async with await pg.connect() as conn:
                await conn.execute("CREATE DATABASE drill")
                cur = await conn.execute("SELECT rolname FROM pg_roles")
                have = {r[0] for r in await cur.fetchall()}
                for role in sorted(policy_roles(script) - have):
                    await conn.execute(
                        sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role))
                    )
            argv = [pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                    "--no-password", "-d", "drill", str(dump)]  # fmt: skip
            status, out = await run_tool(argv, env=pg.conn.env("drill"), timeout=DRILL_TIMEOUT_S)
            if status != 0:
                return [f"pg_restore failed (status {status}): {out.strip()[-1000:]}"]
            got = await take_facts(pg.conn, "drill")
        return compare_db(msgspec.convert(rec.facts, DbFacts), got)

    async def check_redis(self, rec: Any, restored: Path, _scratch: Path) -> list[str]:
        """The RDB's hash, and a scratch redis-server loading it: every key there."""
        rdb = restored / "dump.rdb"
        sha = await asyncio.to_thread(sha256_file, rdb)
        async with scratch_redis(self.layout, rdb=rdb) as r:
            keys = await r.key_count()
        return compare_redis(rec.facts, sha, keys)


# A role as pg_dump names it (quote_ident), and its CREATE POLICY statements'
# TO clause (pg_dump writes AS and FOR only when they are not the defaults).
_ROLE = r'(?:"(?:[^"]|"")*"|[a-z_][a-z0-9_$]*)'
_IDENT = r'(?:"(?:[^"]|"")*"|[^\s".]+)'
_POLICY = re.compile(
    rf"^CREATE POLICY {_IDENT} ON {_IDENT}\.{_IDENT}(?: AS [A-Z]+)?(?: FOR [A-Z]+)?"
    rf" TO ({_ROLE}(?:, {_ROLE})*)",
    re.MULTILINE,
)


def policy_roles(script: str) -> set[str]:
    """The roles named by the CREATE POLICY statements of a pg_dump script."""
    found = set()
    for m in _POLICY.finditer(script):
        for role in re.findall(_ROLE, m.group(1)):
            found.add(role[1:-1].replace('""', '"') if role.startswith('"') else role)
    return found


def bucket_manifest(root: Path) -> dict[str, str]:
    """An S3 bucket's objects as unpacked under `root`: key -> "<size> <sha256>"
    (S3 has no directories: a key's prefix is only part of its name)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = f"{path.stat().st_size} {sha256_file(path)}"
    return out


def bucket_problems(rec: Any, restored: Path) -> list[str]:
    """What the restored bucket's objects lack or hold differently (names,
    sizes, SHA-256, and metadata when the backup recorded it: bucketmeta)
    against those pulled; none when the backup has no bucket."""
    if "bucket" not in rec.facts:
        return []
    got = bucket_manifest(restored / "bucket")
    out = [f"bucket objects: {p}" for p in compare_manifests(rec.facts["bucket"], got)]
    if "bucket_meta" in rec.facts:
        try:
            meta = bucketmeta.facts(bucketmeta.read(restored))
        except bucketmeta.BadBucketMeta as exc:
            return [*out, f"bucket metadata: {exc}"]
        out += [f"bucket metadata: {p}" for p in compare_manifests(rec.facts["bucket_meta"], meta)]
    return out


async def check_data(rec: Any, restored: Path, _scratch: Path) -> list[str]:
    got = await asyncio.to_thread(manifest, restored / "data")
    problems = compare_manifests(rec.facts.get("manifest", {}), got)
    return problems + await asyncio.to_thread(bucket_problems, rec, restored)


async def check_git(rec: Any, restored: Path, scratch: Path) -> list[str]:
    bundle = restored / "repo.bundle"
    problems = []
    if await asyncio.to_thread(sha256_file, bundle) != rec.facts.get("sha256"):
        problems.append("the bundle's SHA-256 differs from when it was taken")
    try:
        refs = await asyncio.to_thread(clone_and_check, bundle, scratch / "clone")
    except DrillError as exc:
        return [*problems, str(exc)]
    return problems + compare_refs(rec.facts.get("refs", {}), refs)


async def check_platform(rec: Any, restored: Path, _scratch: Path) -> list[str]:
    root = restored / "platform"
    problems = compare_manifests(
        rec.facts.get("files", {}), await asyncio.to_thread(file_hashes, root)
    )
    for db in sorted(root.glob("*.sqlite")):
        problems += await asyncio.to_thread(sqlite_problems, db)
    return problems
