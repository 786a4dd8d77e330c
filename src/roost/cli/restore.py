"""`roost restore --from REPOSITORY`: a whole platform back on a fresh machine.

What comes back, and where (`roost.backups.platformrestore` chooses and
checks; this module puts each file where its role expects it, while no
daemon runs):

  the state database          DATA/state.db (the controller's SQLite)
  the secrets key             DATA/keys/fernet.key (service passwords, TLS keys)
  the releases' images        DATA/builder/store (served as the builder's)
  PostgreSQL                  a cluster made anew under the recorded superuser,
                              every app's role, database and dump, checked
                              against the facts taken with the dump
                              (roost.servicehost.rebuild); state.json says so
  Redis                       DATA/servicehost/redis/APP/dump.rdb (loaded at start)
  data directories            DATA/servicehost/appdata/APP (a new version, so
                              runners pull it)
  git repositories            DATA/gateway/repos/APP.git, with the app's key
  backupd                     the repository as its local one, the password as
                              keys/restic.key, its catalog rebuilt

What does not: the machine's own identity (CURVE keys, address book, API
and SSH host keys: `roost up` makes new ones), and base backups (WAL of the
lost cluster). A data directory that is not empty is refused before
anything is touched; a failure half-way removes everything made, so a
failed restore leaves the directory as it found it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from roost import appdirs
from roost.backups import platformrestore as pr
from roost.backups.layout import Layout
from roost.backups.pgfacts import DbFacts, PgConn, compare, take_facts
from roost.cli.local import lock_data_dir
from roost.controller.secretbox import FERNET_FILE
from roost.images.digest import ImageError, format_digest
from roost.images.store import ImageStore
from roost.servicehost.layout import Layout as ServiceLayout
from roost.servicehost.postgres import ADMIN_HOST, Postgres
from roost.servicehost.rebuild import fresh_state, rebuild_cluster
from roost.servicehost.state import HostState, save_state
from roost.servicehost.user import ServiceUser, ensure_service_user
from roost.settings import Settings


@dataclass
class Restored:
    plan: pr.Plan
    listed: int = 0
    lines: list[str] = field(default_factory=list)


async def restore_platform(
    data: Path,
    settings: Settings,
    source: str,
    password_file: Path,
    ssh_key: Path | None = None,
    host_key: str = "",
) -> Restored:
    """Everything the module docstring says, or nothing (the data directory
    is left as it was found, and the error raised)."""
    existed = data.exists()
    why = pr.refusal(data, os.listdir(data) if existed else [])
    if why is not None:
        raise pr.RestoreError(why)
    lock = lock_data_dir(data)
    try:
        return await _restore(data, settings, source, password_file, ssh_key, host_key)
    except BaseException:
        await asyncio.to_thread(_empty, data, existed)
        raise
    finally:
        lock.close()


def _empty(data: Path, keep_dir: bool) -> None:
    """Undo a failed restore: what was made in `data`, or `data` itself."""
    if not keep_dir:
        shutil.rmtree(data, ignore_errors=True)
        return
    for entry in data.iterdir():
        if entry.name in pr.HARMLESS:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


async def _restore(
    data: Path,
    settings: Settings,
    source: str,
    password_file: Path,
    ssh_key: Path | None,
    host_key: str,
) -> Restored:
    layout = Layout(data)
    repo = await pr.open_source(source, layout, password_file, ssh_key, host_key)
    local, _ = await pr.adopt(repo, layout)
    found = pr.found_in(await local.snapshots())
    choice = pr.choose(found)
    staging = layout.staging / "restore"
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)

    platform = choice.platform
    pfacts = await pr.fetch_checked(local, platform, staging / platform.backup_id)
    problems = pr.platform_problems(pfacts.get("files", {}))
    if problems:
        raise pr.RestoreError(
            f"{platform.backup_id} cannot be restored here: {'; '.join(problems)}"
        )
    proven: dict[str, tuple[dict[str, Any], float]] = {platform.backup_id: (pfacts, time.time())}
    root = staging / platform.backup_id / "platform"
    apps = await asyncio.to_thread(pr.read_apps, root)
    hosts = pr.servicehost_files(pfacts["files"])
    state = fresh_state((root / hosts[0]).read_bytes()) if hosts else HostState()
    plan = pr.settle(choice, apps, {(s.app, s.kind) for s in state.services.values()})
    for kinds in plan.apps.values():
        for f in kinds.values():
            facts = await pr.fetch_checked(local, f, staging / f.backup_id)
            proven[f.backup_id] = (facts, time.time() if f.kind != "pgdump" else 0.0)

    done = Restored(plan)
    _place_platform(data, root)
    done.lines.append(f"platform: {platform.backup_id} (state, keys, {_images(data, root)} images)")
    user = await asyncio.to_thread(ensure_service_user, settings.services_user)
    await _place_services(data, settings, state, plan, staging, proven, user)
    for app, key in sorted(apps.items()):
        kinds = plan.apps.get(app, {})
        if "git" in kinds:
            _place_repo(data, app, key, staging / kinds["git"].backup_id / "repo.git")
        shown = ", ".join(f"{k} {f.backup_id}" for k, f in sorted(kinds.items())) or "nothing"
        done.lines.append(f"{app}: {shown}")
    done.lines += [f"note: {n}" for n in plan.notes]
    done.listed = await pr.rebuild_catalog(local, layout, found, proven)
    done.lines.append(
        f"backupd: {done.listed} backups listed, {len(proven)} proven by this restore"
    )
    await asyncio.to_thread(shutil.rmtree, staging, True)
    return done


def _place_platform(data: Path, root: Path) -> None:
    # The controller's database when none is named (roost.controller.daemon).
    pr.write_private(data / "state.db", (root / "state.sqlite").read_bytes())
    pr.write_private(data / "keys" / FERNET_FILE, (root / "keys" / FERNET_FILE).read_bytes())


def _images(data: Path, root: Path) -> int:
    """The staged blobs into the builder's store: each named by its own hash, or a
    layer archive (`files/`) checked against the file manifest that names it."""
    store = ImageStore(data / "builder" / "store")
    n = 0
    staged = root / "images" / "sha256"
    for blob in sorted(staged.iterdir()) if staged.is_dir() else []:
        try:
            digest = store.put_file(blob)
        except (ImageError, OSError) as exc:
            raise pr.RestoreError(f"image blob {blob.name}: {exc}") from None
        if digest != format_digest(blob.name):
            store.delete(digest)
            raise pr.RestoreError(f"image blob {blob.name} does not hash to its name")
        n += 1
    archives = root / "images" / "files"
    for blob in sorted(archives.iterdir()) if archives.is_dir() else []:
        try:
            store.put_files_archive(blob, format_digest(blob.name))
        except (ImageError, OSError) as exc:
            raise pr.RestoreError(f"image layer {blob.name}: {exc}") from None
        n += 1
    return n


async def _place_services(
    data: Path,
    settings: Settings,
    state: HostState,
    plan: pr.Plan,
    staging: Path,
    proven: dict[str, tuple[dict[str, Any], float]],
    user: ServiceUser,
) -> None:
    """PostgreSQL rebuilt and loaded, Redis RDBs and data directories in place,
    then the servicehost's state.json."""
    sl = ServiceLayout(data)
    dumps: dict[str, Path] = {}
    expected: dict[str, tuple[str, DbFacts]] = {}  # database -> (backup id, facts)
    for svc in state.of_kind("postgres"):
        f = plan.apps.get(svc.app, {}).get("pgdump")
        if f is not None:
            dumps[svc.app] = staging / f.backup_id / "db.dump"
            facts = msgspec.convert(proven[f.backup_id][0], DbFacts)
            expected[svc.database] = (f.backup_id, facts)

    async def check(pg: Postgres, database: str) -> list[str]:
        backup_id, facts = expected[database]
        c = pg.cluster
        got = await take_facts(PgConn(ADMIN_HOST, c.port, c.superuser, c.password), database)
        problems = compare(facts, got)
        if not problems:
            proven[backup_id] = (proven[backup_id][0], time.time())
        return problems

    sl.create(searchable=user.dropped)
    if state.postgres is not None and state.of_kind("postgres"):
        await rebuild_cluster(
            data, state, dumps, user, settings.postgres_connection_limit, check
        )  # fmt: skip
    versions: dict[str, int] = {}
    for app, kinds in sorted(plan.apps.items()):
        if "redis" in kinds:
            d = sl.redis(app)
            d.mkdir(mode=0o700, exist_ok=True)
            os.replace(staging / kinds["redis"].backup_id / "dump.rdb", d / "dump.rdb")
            user.chown_tree(d)
        if "data" in kinds:
            appdata = sl.root / "appdata"
            appdata.mkdir(mode=0o711, exist_ok=True)
            d = appdata / app
            os.replace(staging / kinds["data"].backup_id / "data", d)
            os.chmod(d, 0o700)
            user.chown_tree(d)
            # A version runners have never seen: each pulls the restored tree.
            versions[app] = int(time.time() * 1000)
    if versions:
        (sl.root / "appdata" / ".versions.json").write_text(json.dumps(versions, sort_keys=True))
    save_state(sl.state_file, state)


def _place_repo(data: Path, app: str, key: str, clone: Path) -> None:
    """The checked mirror clone as the gateway's repository of the app."""
    repos = data / "gateway" / "repos"
    repos.mkdir(parents=True, exist_ok=True)
    os.chmod(data / "gateway", 0o700)
    # Nothing points back at the bundle, which goes with the staging.
    subprocess.run(
        ["git", "-C", str(clone), "config", "--remove-section", "remote.origin"],
        capture_output=True, check=False,
    )  # fmt: skip
    appdirs.write_key(clone, key)
    os.replace(clone, repos / f"{app}.git")
