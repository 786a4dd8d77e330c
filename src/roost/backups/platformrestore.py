"""A whole platform from its backup repository (`roost restore --from REPOSITORY`).

Theory of operation. Everything needed is in the repository: each snapshot
is tagged app=, kind=, id= and carries its facts.json (what was true when
it was taken). So on a fresh machine, with only the repository and its
password:

  choose    the newest platform snapshot, and per app and kind the newest
            pgdump, redis, data and git snapshot (`choose`, pure); then,
            once the platform's state is read, only those of apps that
            exist in it, and for services only those the servicehost's
            state lists (`settle`, pure), saying what comes back empty;
  adopt     the repository becomes this backupd's local one (a local
            directory is copied as it is, so every snapshot keeps its id;
            a remote one is copied with `restic copy`), the password its
            keys/restic.key: the new backupd continues the same history;
  fetch     each chosen snapshot is restored from it into staging and
            checked against its facts (`check`, the drill's comparisons):
            a snapshot whose bytes do not match what was taken fails the
            whole restore, saying which and why; a database is checked
            after it is loaded (roost.servicehost.rebuild, pgfacts);
  catalog   one record per snapshot (base backups aside: they are of the
            lost cluster, whose WAL history a fresh one does not share),
            those restored now "verified" (this restore was their drill),
            the others "taken", so backupd drills them again.

Where the files go is the caller's (`roost.cli.restore`): it alone may know
every role's layout. The apps and their keys are those the controller
said with the state copy (restore.json, roost.backups.platformindex), and
the releases' images are in the snapshot already (roost.backups.images);
only a snapshot older than restore.json has its keys read from the state
copy itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from roost.backups import drill
from roost.backups.catalog import ID_RE, Catalog, Record
from roost.backups.layout import Layout
from roost.backups.locations import (
    Location,
    LocationError,
    RepoError,
    parse_host_key_pin,
    parse_location,
    pin_host_key,
)
from roost.backups.platformindex import PlatformIndexError, app_keys
from roost.backups.restic import Repo, Snapshot
from roost.wire.messages import BackupEntry, BackupKind

# Kinds that come back with a platform (a base backup is the lost cluster's).
APP_KINDS = ("pgdump", "redis", "data", "git")
SERVICE_OF = {"pgdump": "postgres", "redis": "redis"}
# A data directory may already hold these and still count as empty.
HARMLESS = frozenset({"lost+found"})
# The state database's secrets key (roost.controller.secretbox.FERNET_FILE).
FERNET = "fernet.key"
FETCH_TIMEOUT_S = 6 * 3600.0


class RestoreError(Exception):
    """The platform cannot be restored; the message says why, and what was left."""


# ---------------------------------------------------------------- choosing (pure)


def refusal(data_dir: Path, names: Iterable[str]) -> str | None:
    """Why `data_dir`, holding `names`, may not receive a platform; None if it may."""
    held = sorted(set(names) - HARMLESS)
    if not held:
        return None
    shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    return (
        f"{data_dir} is not empty ({shown}): a restore goes into a new or empty data "
        "directory only, so it can never mix with or replace a platform; nothing was changed"
    )


@dataclass(frozen=True)
class Found:
    """A snapshot of the repository, as its tags describe it."""

    snapshot: str  # restic's id
    backup_id: str
    app: str
    kind: str
    taken_at: float


def found_in(snapshots: Iterable[Snapshot]) -> list[Found]:
    """The snapshots that are backups (tagged kind= and a backup id=), oldest first."""
    out = []
    for s in snapshots:
        kind, backup_id = s.tag("kind"), s.tag("id")
        if not kind or not backup_id or not ID_RE.match(backup_id):
            continue
        out.append(Found(s.id, backup_id, s.tag("app") or "", kind, s.time.timestamp()))
    return sorted(out, key=lambda f: (f.taken_at, f.backup_id))


@dataclass(frozen=True)
class Choice:
    platform: Found
    # (app, kind) -> the newest snapshot of it
    newest: dict[tuple[str, str], Found]


def choose(found: Iterable[Found]) -> Choice:
    """The newest platform snapshot, and the newest snapshot of each app's kinds."""
    platform: Found | None = None
    newest: dict[tuple[str, str], Found] = {}
    for f in found:
        if f.kind == "platform":
            if platform is None or f.taken_at >= platform.taken_at:
                platform = f
        elif f.kind in APP_KINDS and f.app:
            key = (f.app, f.kind)
            if key not in newest or f.taken_at >= newest[key].taken_at:
                newest[key] = f
    if platform is None:
        raise RestoreError(
            "the repository holds no platform backup (kind=platform): nothing to restore a "
            "platform from (`roost backups capture --platform` takes one)"
        )
    return Choice(platform, newest)


def platform_problems(files: Mapping[str, str]) -> list[str]:
    """Why the platform snapshot (its facts' file list) cannot come back on one machine."""
    problems = []
    if "state.sqlite" not in files:
        if "state.pgdump" in files:
            problems.append(
                "its state database is a cluster's PostgreSQL (state.pgdump): restore it with "
                "pg_restore into the cluster's state database; `roost restore` brings back a "
                "one-machine platform"
            )
        else:
            problems.append("it holds no state database")
    if f"keys/{FERNET}" not in files:
        problems.append(f"it holds no keys/{FERNET}: the services' passwords could not be read")
    hosts = servicehost_files(files)
    if len(hosts) > 1:
        problems.append(
            f"it names {len(hosts)} servicehosts ({', '.join(hosts)}); one machine runs one"
        )
    return problems


def servicehost_files(files: Iterable[str]) -> list[str]:
    return sorted(f for f in files if f.startswith("servicehosts/") and f.endswith(".json"))


@dataclass
class Plan:
    platform: Found
    # app -> kind -> the snapshot restored
    apps: dict[str, dict[str, Found]] = field(default_factory=dict)
    # what is not restored, or comes back empty, in words
    notes: list[str] = field(default_factory=list)

    def chosen(self) -> list[Found]:
        return [self.platform, *(f for kinds in self.apps.values() for f in kinds.values())]


def settle(choice: Choice, apps: Iterable[str], services: Iterable[tuple[str, str]]) -> Plan:
    """Of the newest snapshots, those of the apps the platform's state holds:
    pgdump and redis only where the servicehost's state has that service
    (`services`: (app, "postgres" | "redis")). Pure."""
    names, held = set(apps), set(services)
    plan = Plan(choice.platform)
    for (app, kind), f in sorted(choice.newest.items()):
        if app not in names:
            plan.notes.append(f"{f.backup_id}: {app} is not an app of this platform, left out")
            continue
        service = SERVICE_OF.get(kind)
        if service is not None and (app, service) not in held:
            plan.notes.append(f"{f.backup_id}: {app} has no {service} now, left out")
            continue
        plan.apps.setdefault(app, {})[kind] = f
    for app, service in sorted(held):
        kind = next(k for k, s in SERVICE_OF.items() if s == service)
        if app in names and kind not in plan.apps.get(app, {}):
            plan.notes.append(f"{app}: no backup of its {service}: it comes back empty")
    return plan


def record_of(f: Found, facts: dict[str, Any], verified_at: float) -> Record:
    """The catalog record of a snapshot found in the repository (pure):
    verified when this restore proved it (`verified_at` > 0), else taken."""
    entry = BackupEntry(
        id=f.backup_id,
        app=f.app,
        kind=cast(BackupKind, f.kind),
        taken_at=f.taken_at,
        reason="found in the repository",
        state="verified" if verified_at else "taken",
        verified_at=verified_at,
        locations={"local": "ok"},
    )
    database = str(facts.get("database", "")) if f.kind == "pgdump" else ""
    return Record(entry=entry, snapshots={"local": f.snapshot}, database=database, facts=facts)


def check(kind: str, facts: Mapping[str, Any], restored: Path) -> list[str]:
    """What a restored snapshot's files lack or hold differently from its facts
    (a database is checked once loaded). Blocking."""
    if kind == "platform":
        return drill.compare_manifests(
            facts.get("files", {}), drill.file_hashes(restored / "platform")
        )
    if kind == "data":
        return drill.compare_manifests(facts.get("manifest", {}), drill.manifest(restored / "data"))
    if kind == "redis":
        sha = drill.sha256_file(restored / "dump.rdb")
        return [] if sha == facts.get("sha256") else ["the RDB's SHA-256 is not the one taken"]
    if kind == "git":
        bundle = restored / "repo.bundle"
        if drill.sha256_file(bundle) != facts.get("sha256"):
            return ["the bundle's SHA-256 is not the one taken"]
        try:
            refs = drill.clone_and_check(bundle, restored / "repo.git")
        except drill.DrillError as exc:
            return [str(exc)]
        return drill.compare_refs(facts.get("refs", {}), refs)
    return []


# ---------------------------------------------------------------- its apps


def read_apps(platform_root: Path) -> dict[str, str]:
    """app name -> its key, from the restored platform tree. Blocking."""
    try:
        return app_keys(platform_root)
    except PlatformIndexError as exc:
        raise RestoreError(f"the platform backup does not say which apps it holds: {exc}") from None


# ---------------------------------------------------------------- the repository


async def open_source(
    value: str, layout: Layout, password_file: Path, ssh_key: Path | None, host_key: str
) -> Repo:
    """The repository `value` names, read with `password_file` (kept as this
    backupd's keys/restic.key) and, over SFTP, `ssh_key` and the pinned
    `host_key` (kept as its own)."""
    try:
        loc = parse_location("source", value, setting="--from")
    except LocationError as exc:
        raise RestoreError(str(exc)) from None
    layout.create()
    _copy_private(password_file, layout.restic_password)
    if loc.kind == "sftp":
        if ssh_key is None or not host_key:
            raise RestoreError(f"{loc}: an SFTP repository needs --ssh-key and --host-key")
        _copy_private(ssh_key, layout.ssh_key)
        with contextlib.suppress(FileNotFoundError):
            _copy_private(
                ssh_key.with_name(ssh_key.name + ".pub"), layout.ssh_key.with_suffix(".pub")
            )
        try:
            pin = parse_host_key_pin(host_key, setting="--host-key")
            await pin_host_key(loc, layout, pin, setting="--host-key")
        except (LocationError, RepoError) as exc:
            raise RestoreError(str(exc)) from None
    return Repo(loc, layout)


def _copy_private(src: Path, dest: Path) -> None:
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise RestoreError(f"cannot read {src}: {exc}") from None
    write_private(dest, data)


def write_private(path: Path, data: bytes) -> None:
    """`data` as a file only its owner reads (0600, in a 0700 directory if made)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


async def adopt(source: Repo, layout: Layout) -> tuple[Repo, dict[str, str]]:
    """This backupd's local repository, holding every snapshot of `source`;
    (it, {source's snapshot id: its id here})."""
    local_loc = Location(
        name="local", kind="local", repository=str(layout.local_repo), path=str(layout.local_repo)
    )
    local = Repo(local_loc, layout)
    try:
        mine = await source.snapshots()
        if source.location.kind == "local":
            # The same files: every snapshot keeps its id, and nothing is re-chunked.
            await asyncio.to_thread(shutil.copytree, source.location.local_dir, layout.local_repo)
            same = {s.id for s in await local.snapshots()}
            if same != {s.id for s in mine}:
                raise RestoreError(f"the copy of {source} does not list the same snapshots")
            return local, {s.id: s.id for s in mine}
        await local.init(chunker_from=source)
        ids = await source.copy(local, [s.id for s in mine]) if mine else {}
    except RepoError as exc:
        raise RestoreError(str(exc)) from None
    return local, ids


async def fetch(repo: Repo, f: Found, into: Path) -> dict[str, Any]:
    """Restore one snapshot into `into`; its facts.json."""
    try:
        await repo.restore(f.snapshot, into, timeout=FETCH_TIMEOUT_S)
    except RepoError as exc:
        raise RestoreError(f"{f.backup_id} could not be restored: {exc}") from None
    try:
        facts = json.loads((into / "facts.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise RestoreError(f"{f.backup_id}: its facts.json does not read: {exc}") from None
    if not isinstance(facts, dict):
        raise RestoreError(f"{f.backup_id}: its facts.json is not an object")
    return facts


async def fetch_checked(repo: Repo, f: Found, into: Path) -> dict[str, Any]:
    """`fetch`, then `check`: RestoreError naming the snapshot and what differs."""
    facts = await fetch(repo, f, into)
    problems = await asyncio.to_thread(check, f.kind, facts, into)
    if problems:
        raise RestoreError(
            f"{f.backup_id} ({f.kind} of {f.app or 'the platform'}) does not match what was "
            f"taken: {drill.verdict(problems)}"
        )
    return facts


async def rebuild_catalog(
    repo: Repo,
    layout: Layout,
    found: list[Found],
    proven: Mapping[str, tuple[dict[str, Any], float]],
) -> int:
    """A record per backup found (`proven`: backup id -> (facts, when this
    restore proved it)); how many."""
    catalog = Catalog(layout.catalog)
    n = 0
    for f in found:
        if f.kind not in (*APP_KINDS, "platform"):
            continue
        if f.backup_id in proven:
            facts, at = proven[f.backup_id]
        else:
            try:
                facts = json.loads(await repo.dump(f.snapshot, "facts.json"))
            except (RepoError, ValueError):
                continue  # unreadable: not listed; backupd's check will say what is wrong
            at = 0.0
        catalog.put(record_of(f, facts, at))
        n += 1
    return n
