"""The builder's working directories and the facts probed once at start.

DATA/builder/
  store/        ImageStore: image manifests, their layers, static bundles (root only)
  builds/<id>/  one directory per build, removed when it ends
  layers/<key>/ dependency layers: venv/, ready (names the layer's blob in store/);
                in memory instead (roost.builder.ramlayers) when a tmpfs is available,
                this directory then holds only layers that did not fit there
  locks/        locks by requirements digest (reuse across builds)
  pythons/      <key>.json: the stored blob of each interpreter layer (roost.builder.pylayer)
  uv-cache/     uv's shared cache (build user); with in-memory layers, uv uses a
                copy in the same tmpfs and this one is its lasting copy
                (roost.builder.uvcache)
  home/         HOME of probes run as the build user

Everything a build writes lives under builds/<id>/ or a temporary name that
start-up sweeps (builds/*, layers/.tmp-*, store/tmp/*), so a builder killed
mid-build leaves nothing that a later build could mistake for finished work.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import uv

from roost.builder.errors import BuildError
from roost.builder.interpreter import Interpreter, choose
from roost.builder.layerpack import Storing
from roost.builder.pythons import Pythons, discover
from roost.builder.ramlayers import has_room, open_ram_layers, remove_ram_layers
from roost.builder.sandbox import BuildUser, ensure_build_user
from roost.builder.uvcache import UvCache
from roost.images.store import ImageStore
from roost.images.treescan import HashCache
from roost.proc.exits import ConfigError, Unavailable
from roost.settings import Settings
from roost.sysuser import check_reachable
from roost.tenant.cgroups import Limits
from roost.tenant.identity import IdentityError, ensure_identity, identity_for
from roost.tenant.launch import Tenancy, TenantError

log = logging.getLogger("roost.builder")


@dataclass
class Workspace:
    root: Path
    settings: Settings
    user: BuildUser
    interp: Interpreter
    uv: str
    store: ImageStore
    uv_caches: UvCache
    # Where new dependency layers go: a tmpfs directory, or disk_layers.
    ram_layers: Path | None = None
    # Every build step that runs code starts confined through this (as root).
    tenancy: Tenancy = field(default_factory=lambda: Tenancy("unconfined", enabled=False))
    layer_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    layers_in_use: dict[str, int] = field(default_factory=dict)
    # Layer blobs named but not yet stored (roost.builder.layerpack): the
    # image store's chunk server serves what is written of them meanwhile.
    storing: dict[str, Storing] = field(default_factory=dict)
    # The hashes of files dependency layers were named by, by inode
    # (roost.builder.layerpack): a warm layer's scan reads only new files.
    hash_cache: HashCache = field(default_factory=HashCache)
    # The interpreters apps choose from (roost.builder.pythons); None: `interp` alone.
    found_pythons: Pythons | None = None

    @property
    def pythons(self) -> Pythons:
        return self.found_pythons or Pythons(available=(self.interp,), default=self.interp)

    @property
    def builds(self) -> Path:
        return self.root / "builds"

    @property
    def layers(self) -> Path:
        """Where dependency layers are made (in memory when possible)."""
        return self.ram_layers or self.disk_layers

    @property
    def disk_layers(self) -> Path:
        return self.root / "layers"

    def layer_roots(self) -> list[Path]:
        return [self.layers] if self.ram_layers is None else [self.ram_layers, self.disk_layers]

    def layer_path(self, key: str) -> Path:
        """The directory of layer `key`: where it already is, else where it would be made."""
        if self.ram_layers is None:
            return self.disk_layers / key
        if (self.disk_layers / key / "ready").exists():
            return self.disk_layers / key
        ram = self.ram_layers / key
        if ram.exists() or has_room(self.ram_layers):
            return ram
        return self.disk_layers / key  # tmpfs short of room: this one goes on disk

    def close(self) -> None:
        """Save uv's cache; give back the memory of in-memory layers (the builder is stopping)."""
        self.uv_caches.close()
        self.tenancy.close()
        if self.ram_layers is not None:
            remove_ram_layers(Path(self.settings.builder_ram_dir), self.root)
            self.ram_layers = None

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def uv_cache(self) -> Path:
        """The cache uv uses now (in memory beside the layers, or on disk)."""
        return self.uv_caches.path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @classmethod
    async def open(cls, root: Path, settings: Settings) -> Workspace:
        try:
            user = ensure_build_user(settings.build_user)
        except BuildError as exc:
            raise Unavailable(str(exc)) from None
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        if user.dropped:
            # The build user walks down to DATA/builder (o+x on every parent).
            check_reachable(user.name, user.uid, root)
        store = ImageStore(root / "store")
        os.chmod(store.root, 0o700)
        swept = store.clean_tmp()
        for sub, mode in (("builds", 0o711), ("layers", 0o755), ("locks", 0o700)):
            (root / sub).mkdir(exist_ok=True)
            os.chmod(root / sub, mode)
        for p in (root / "builds").iterdir():
            shutil.rmtree(p, ignore_errors=True)
            swept += 1
        ram = open_ram_layers(Path(settings.builder_ram_dir), root, settings.builder_layers_ram)
        for layers in (root / "layers", ram):
            for p in layers.iterdir() if layers is not None else ():
                # Half made, not ready, or made by the single-tar builder (venv.tar, no blob).
                ready = (p / "ready").exists() and not (p / "venv.tar").exists()
                if p.name.startswith(".") or not ready:
                    shutil.rmtree(p, ignore_errors=True)
                    swept += 1
        if swept:
            log.info("swept %d leftovers of interrupted builds", swept)
        for sub in ("uv-cache", "home"):
            (root / sub).mkdir(exist_ok=True)
            os.chmod(root / sub, 0o700)
            if user.dropped:  # follows a symlinked shared cache on purpose
                os.chown(root / sub, user.uid, user.gid)
        uv_caches = await asyncio.to_thread(
            UvCache.open,
            root / "uv-cache",
            None if ram is None else ram.parent / "uv-cache",
            settings.builder_uv_cache_ram,
            user,
        )
        try:
            interp = await choose(settings.build_python, user, root / "home")
        except BuildError as exc:
            # The same start would find the same interpreters: a supervisor
            # must stop and say so, not restart the builder forever.
            if settings.build_python:
                raise ConfigError(str(exc)) from None
            raise Unavailable(str(exc)) from None
        uv_bin = uv.find_uv_bin()
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
        try:
            tenancy = Tenancy.for_daemon(f"builder-{tag}", settings.sandbox)
        except TenantError as exc:
            raise Unavailable(f"cannot confine build steps: {exc}") from None
        try:
            pythons = await discover(
                settings.build_pythons, bool(settings.build_python), interp, user,
                root / "home", tenancy,
            )  # fmt: skip
        except BuildError as exc:
            tenancy.close()
            raise ConfigError(str(exc)) from None
        log.info("pythons apps may choose: %s", pythons.describe())
        return cls(
            root=root,
            settings=settings,
            user=user,
            interp=interp,
            uv=uv_bin,
            store=store,
            uv_caches=uv_caches,
            ram_layers=ram,
            tenancy=tenancy,
            found_pythons=pythons,
        )

    @property
    def step_limits(self) -> Limits:
        return Limits(memory_mb=self.settings.build_memory_mb, pids=self.settings.build_pids_max)

    def app_build_user(self, app_id: int, app: str) -> BuildUser:
        """The app's own build user (roost.tenant.identity), or the shared one
        when there is no app id (an older controller) or nothing to drop to."""
        if app_id <= 0 or not self.user.dropped or not self.tenancy.enabled:
            return self.user
        try:
            ident = ensure_identity(identity_for(app_id, app, "build"))
        except IdentityError as exc:
            raise BuildError(f"build user of {app}: {exc}") from None
        return BuildUser(name=ident.name, uid=ident.uid, gid=ident.gid, dropped=True)
