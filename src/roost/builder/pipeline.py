"""One build: upload in, image (and static bundle) in the store out.

Steps, each logged as "-----> name (1.23 s)" when it ends: fetch (unpack the
upload), appspec (read the configuration, apply [symlinks], Django settings),
lock (reuse or resolve), install (reuse or build the dependency layer),
extensions (every compiled module's libraries resolve on the runner stack:
roost.builder.extcheck),
bundle (image root: shortcuts, roost-image.json), configure (the app's config
vars and service credentials from the controller, which provisions the
declared services first; bundle_config.py rendered from them), check (import
the WSGI entrypoints in the built venv, as the build user, when a release
phase will run the app's code before its instances do), collect static,
pack (code layer, image manifest and static bundle into the store).

The configuration (credentials included) reaches only the steps that run the
app's own code, check and collect static, as their environment and
bundle_config.py: it is fetched after the dependency steps ran, kept in
builds/<id>/config/ (roost.builder.buildconfig; no bytecode of it is
written), and removed with the build's directory.

The image is a manifest (roost.images.manifest) naming its layers: the
dependency layer (roost.builder.layers; reused as is when the lock is
unchanged, so a code-only build copies and packs nothing of size), the
code layer (the checkout, roost-image.json, shortcuts) and the interpreter
the app chose (roost.builder.pythons), carried in a layer of its own
(roost.builder.pylayer) unless it is the host's /usr one. A freshly installed
dependency layer is packed in the background while check and collect static
run; pack waits for it.

Theory of operation: everything of a build lives in builds/<id>/ and is
removed when the build ends however it ends; the code layer, the manifest
and the static bundle are committed to the store in the last step only, and
removed again if the build fails after that (unless the store already held
the same bytes). A dependency layer's blob is never removed by a build: it
belongs to the layer, which outlives builds. Files are written by the
builder only while they are still what was uploaded (fetch, appspec); once
the upload's code has run (lock onwards), the checkout is read only by tar
(which does not follow symlinks) and untrusted outputs are opened with
O_NOFOLLOW.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.appspec import AppSpec, AppSpecError, load_app
from roost.appspec.runtime import RuntimeVars, environment
from roost.builder import appsteps, extcheck, pylayer, stacks
from roost.builder import buildconfig as bc
from roost.builder import django as dj
from roost.builder import lock as locks
from roost.builder.checkout import apply_symlinks, open_dirs
from roost.builder.diskcheck import ensure_free_disk
from roost.builder.errors import BuildError, OutputLimitExceeded
from roost.builder.ignore import apply_ignores
from roost.builder.jails import app_jail, uv_jail
from roost.builder.layers import LayerBlob, LayerJob, NeedsBuild, UvAs, needs_build, uv_env
from roost.builder.pack import (
    TAR_FLAGS,
    pack_tree,
    run_abortable,
    store_manifest,
)
from roost.builder.sandbox import Completed, Jail, LogFn, base_env, run
from roost.builder.staticpack import pack_static_tree
from roost.builder.upload import UploadLimits, extract_upload
from roost.builder.workspace import Workspace
from roost.images.manifest import LayerRef
from roost.wire.messages import StaticRoute

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
RESERVED_NAMES = {"venv", "python", "data", "shortcuts", "roost-image.json"}
IMAGE_FORMAT = 1


@dataclass
class BuildOutcome:
    spec: AppSpec
    lock: str
    lock_digest: str
    image_digest: str
    image_size: int
    static_digest: str = ""
    static_routes: list[StaticRoute] = field(default_factory=list)
    installed: bool = False  # False: the dependency layer was reused
    layer_key: str = ""
    layer_digest: str = ""  # the dependency layer's blob
    code_digest: str = ""  # the code layer's blob
    step_times: dict[str, float] = field(default_factory=dict)


class Build:
    def __init__(
        self,
        ws: Workspace,
        build_id: str,
        app: str,
        archive: bytes,
        log: Callable[[str], None],
        previous_lock_text: str = "",
        clock: Callable[[], float] = time.monotonic,
        app_id: int = 0,
        env_source: Callable[[AppSpec], Awaitable[dict[str, str]]] | None = None,
        layer_files: bool = True,
    ) -> None:
        for what, value in (("build id", build_id), ("app name", app)):
            if not _SAFE_ID.fullmatch(value):
                raise BuildError(f"invalid {what} {value!r}")
        self.ws = ws
        self.build_id = build_id
        self.app = app
        # Who runs this build's app code (the import check, collectstatic).
        self.user = ws.app_build_user(app_id, app)
        self.archive = archive
        self.previous_lock_text = previous_lock_text
        # Name a fresh dependency layer by its files (BuildRequest.layer_files).
        self.layer_files = layer_files
        self._env_source = env_source
        # Config vars and service credentials: the app's code steps' alone.
        self.config_env: dict[str, str] = {}
        self._sink = log
        self._clock = clock
        self._output_bytes = 0
        self.dir = ws.builds / build_id
        self.src = self.dir / "src"
        self.image_root = self.dir / "root"
        self.home = self.dir / "home"
        self.out = self.dir / "out"
        self.spec: AppSpec | None = None
        self.checkout = self.image_root / "app"
        self.django: dj.DjangoPlan | None = None
        self.lock = ""
        self.interp = ws.pythons.default  # the app's choice, made once its spec is read
        self.layer_key = ""
        self._held_key = ""  # the layer counted in ws.layers_in_use for this build
        self.layer_job: LayerJob | None = None
        self.layer_blob: LayerBlob | None = None
        # A fresh layer's extension scan, started once its packages are in,
        # while their bytecode is compiled (which adds only pycs, not scanned).
        self._venv_scan = extcheck.EarlyScan()
        self.code_digest = ""
        self.installed = False
        self.static_bundle: Path | None = None
        self.static_routes: list[StaticRoute] = []
        self.step_times: dict[str, float] = {}
        # Blobs this build added to the store (removed again if it fails).
        self._committed: list[str] = []

    # ------------------------------------------------------------ plumbing

    def log(self, line: str) -> None:
        self._output_bytes += len(line) + 1
        limit = self.ws.settings.build_output_limit
        if self._output_bytes > limit:
            raise OutputLimitExceeded(
                f"build output passed {limit} bytes (ROOST_BUILD_OUTPUT_LIMIT); build stopped"
            )
        self._sink(line)

    async def _step(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        start = self._clock()
        try:
            await fn()
        except BaseException:
            self._sink(f"-----> {name} failed ({self._clock() - start:.2f} s)")
            raise
        took = self._clock() - start
        self.step_times[name] = took
        self.log(f"-----> {name} ({took:.2f} s)")

    async def run(self, *, settle: bool = True) -> BuildOutcome:
        """Build; `settle=False` returns once a fresh layer's blob is named, maybe not
        yet stored (the daemon delivers the result, then awaits `stored`: layerpack)."""
        start = self._clock()
        timeout = self.ws.settings.build_timeout_s
        self.log(f"-----> building {self.app} (build {self.build_id})")
        try:
            try:
                async with asyncio.timeout(timeout):
                    for name, fn in (
                        ("fetch", self.fetch),
                        ("appspec", self.read_appspec),
                        ("lock", self.resolve_lock),
                        ("install", self.install),
                        ("extensions", self.extensions),
                        ("bundle", self.bundle),
                        ("configure", self.configure),
                        ("check", self.check),
                        ("collect static", self.collect_static),
                        ("pack", self.pack),
                    ):
                        await self._step(name, fn)
                    if settle and (error := await self.stored()):
                        raise BuildError(error)
            except TimeoutError:
                raise BuildError(
                    f"build took longer than {timeout:.0f} s (ROOST_BUILD_TIMEOUT_S)"
                ) from None
        except BaseException as exc:
            for digest in self._committed:
                self.ws.store.delete(digest)
            if self.layer_job is not None:
                # The app failed, not its dependencies: let a fresh layer finish
                # packing so the next deploy of this lock reuses it. Cancelled
                # or crashed builds stop packing at once.
                await self.layer_job.close(finish=isinstance(exc, BuildError))
            raise
        finally:
            self._release_layer()
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, self.dir, True))
            await self._venv_scan.close()
        assert self.spec is not None
        self.log(f"-----> image {self.image_digest} ({self.image_size / 1e6:.1f} MB) "
                 f"built in {self._clock() - start:.2f} s")  # fmt: skip
        return BuildOutcome(
            spec=self.spec,
            lock=self.lock,
            lock_digest=locks.lock_digest(self.lock),
            image_digest=self.image_digest,
            image_size=self.image_size,
            static_digest=self.static_digest,
            static_routes=self.static_routes,
            installed=self.installed,
            layer_key=self.layer_key,
            layer_digest=self.layer_blob.digest if self.layer_blob else "",
            code_digest=self.code_digest,
            step_times=dict(self.step_times),
        )

    async def stored(self) -> str:
        """Wait for a fresh layer's blob to be stored: "", or why it was not."""
        if self.layer_job is None:
            return ""
        error = await self.layer_job.stored()
        # Where a fresh layer's time went (bench/build.py): install phases, name, pack.
        self.step_times |= {f"layer.{k}": v for k, v in self.layer_job.phases.items()}
        return error

    def _disk(self, needed: int) -> None:
        ensure_free_disk(self.ws.root, needed, self.ws.settings.min_free_disk_fraction)

    def app_jail_for(self, step: str, *extra: Path) -> Jail:
        """A jail for a step that runs the app's code (roost.builder.jails)."""
        return app_jail(
            self.ws.tenancy,
            f"{self.build_id}-{step}",
            build_dir=self.dir,
            venv=self.venv,
            writable=[self.checkout, self.home, *extra],
            limits=self.ws.step_limits,
        )

    # ------------------------------------------------------------ steps

    async def fetch(self) -> None:
        self._disk(4 * len(self.archive))
        for d in (self.dir, self.src, self.image_root):
            d.mkdir()
            os.chmod(d, 0o755)  # the build user reads here (the builder's umask is 077)
        limits = UploadLimits(self.ws.settings.max_upload_bytes)
        # Unpacked as the build user, then taken back (roost.builder.upload).
        n = await extract_upload(
            self.archive, self.src, limits,
            user=self.ws.user, python=self.ws.interp.path, work=self.dir,
        )  # fmt: skip
        self.archive = b""  # not needed any more; builds can be large
        removed = await asyncio.to_thread(apply_ignores, self.src)
        self.log(f"       {n} entries unpacked" + (f", {len(removed)} ignored" if removed else ""))
        if not self.ws.user.dropped:
            self.log("       note: builder is not root; build steps run as the current user")

    async def read_appspec(self) -> None:
        try:
            spec = load_app(self.src)
        except AppSpecError as exc:
            for p in exc.problems:
                self.log(f"       {p}")
            raise BuildError(f"bad app configuration: {exc}") from None
        self.spec = spec
        for w in spec.warnings:
            self.log(f"       warning: {w.message}" + (f" ({w.hint})" if w.hint else ""))
        self.interp = self.ws.pythons.for_app(spec)
        self.log(f"       python {self.interp.version} ({spec.python_source or 'the default'})")
        name = spec.checkout_name
        if not _SAFE_ID.fullmatch(name) or name in RESERVED_NAMES:
            raise BuildError(f"[checkout] directory_name {name!r} is not allowed")
        locks.check_requirements_file(self.src, spec.requirements)
        apply_symlinks(self.src, spec.symlinks, self.log)
        self.django = dj.plan(self.src, spec)
        if self.django and self.django.explicit and spec.django and spec.django.append_settings:
            path = dj.append_settings(self.src, self.django)
            self.log(f"       appended Roost settings to {path.relative_to(self.src)}")
        self.checkout = self.image_root / name
        os.replace(self.src, self.checkout)
        await asyncio.to_thread(open_dirs, self.checkout)
        for d in (self.home, self.out):
            d.mkdir(mode=0o700)
            self.user.chown(d)
        await asyncio.to_thread(self.user.chown_tree, self.checkout)

    async def resolve_lock(self) -> None:
        assert self.spec is not None
        ws = self.ws
        req_digest = locks.requirements_digest(self.checkout, self.spec.requirements)
        python_id = self.interp.python_id
        cache_file = None
        if req_digest is not None:
            import hashlib

            cache_key = hashlib.sha256(f"{req_digest}\n{python_id}".encode()).hexdigest()
            cache_file = ws.locks / f"{cache_key}.txt"
        if locks.reusable(self.previous_lock_text, req_digest, python_id):
            self.lock = self.previous_lock_text
            self.log("       requirements unchanged: reusing the previous release's lock")
        elif cache_file is not None and cache_file.exists():
            text = cache_file.read_text()
            if locks.reusable(text, req_digest, python_id):
                self.lock = text
                self.log("       requirements unchanged: reusing the lock resolved before")
        if not self.lock:
            self.lock = await self._compile(req_digest)
            if cache_file is not None:
                tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(self.lock)
                os.replace(tmp, cache_file)
        pins = locks.pins(self.lock)
        self.log(f"       {len(pins)} packages pinned")
        (self.dir / "lock.txt").write_text(self.lock)
        os.chmod(self.dir / "lock.txt", 0o644)  # uv reads it as the build user

    async def _compile(self, req_digest: str | None) -> str:
        assert self.spec is not None
        extra = self.dir / "roost-extra.in"
        extra.write_text(locks.EXTRA_REQUIREMENTS)
        os.chmod(extra, 0o644)
        inputs = [str(self.checkout / self.spec.requirements)] if self.spec.requirements else []
        argv = [self.ws.uv, "pip", "compile", "--python", self.interp.path,
                "--no-header", "--quiet", *inputs, str(extra)]  # fmt: skip
        self.log("       resolving requirements")
        shared = self._uv_shared()
        done = await self._resolve(argv, shared, log=None)
        if done.returncode != 0 and needs_build(done.output_tail):
            self.log("       a requirement must be built from source to be resolved: "
                     "as the app's own build user, with its own cache")  # fmt: skip
            done = await self._resolve(argv, self._uv_own(), log=self.log)
        elif done.returncode != 0:
            for line in done.output_tail:
                self.log("       " + line)
        if done.returncode != 0:
            why = next((ln.strip() for ln in done.output_tail if ln.strip()), "see the log above")
            raise BuildError(f"cannot resolve the requirements: {why}")
        body = done.stdout.decode("utf-8", "replace")
        return locks.make_lock(body, req_digest, self.interp.python_id)

    async def _resolve(self, argv: list[str], uv_as: UvAs, log: LogFn | None) -> Completed:
        return await run(
            [*argv, *uv_as.flags],
            user=uv_as.user,
            cwd=self.checkout,
            env=uv_env(
                self.ws, Path("/tmp") if self.ws.tenancy.enabled else self.home, uv_as.cache
            ),
            log=log,
            capture_stdout=True,
            jail=uv_jail(
                self.ws.tenancy,
                f"{self.build_id}-lock",
                uv_bin=self.ws.uv,
                python=self.interp.path,
                build_dir=self.dir,
                cache=uv_as.cache,
                layer=None,
                limits=self.ws.step_limits,
                writable=uv_as.writable,
            ),
        )

    def _uv_shared(self) -> UvAs:
        """Wheels only, from the shared cache: no package's code runs."""
        return UvAs(self.ws.user, self.ws.uv_cache, build_sources=False)

    def _uv_own(self) -> UvAs:
        """Source builds: the app's own build user, with the app's own cache.

        Without an app identity (an older controller, or not root) that is
        the shared user and cache, as before builds were jailed.
        """
        if self.user == self.ws.user:
            return UvAs(self.ws.user, self.ws.uv_cache, build_sources=True)
        cache = self.ws.root / "app-caches" / str(self.user.uid)
        cache.parent.mkdir(mode=0o711, exist_ok=True)
        cache.mkdir(mode=0o700, exist_ok=True)
        self.user.chown(cache)
        return UvAs(self.user, cache, build_sources=True, writable=(self.checkout,))

    async def install(self) -> None:
        self._disk(512 << 20)
        key = locks.layer_key(self.lock, self.interp.python_id)
        try:
            await self._layer(key, self._uv_shared())
        except NeedsBuild:
            self.log("       a package has no wheel: building it as the app's own build "
                     "user, with its own cache, into a layer of this app's alone")  # fmt: skip
            stacks.log_build_stack(self.interp.path, self.interp.minor, self.log)
            await self._layer(f"{key}-{self.user.uid}", self._uv_own())
        assert self.layer_job is not None
        self.installed = self.layer_job.installed
        if not self.installed:
            self.log(f"       dependency layer {self.layer_key[:12]} unchanged: nothing installed")

    async def _layer(self, key: str, uv_as: UvAs) -> None:
        """Reuse or make layer `key`, counted in use while this build holds it."""
        ws = self.ws
        ws.layers_in_use[key] = ws.layers_in_use.get(key, 0) + 1
        self.layer_key = self._held_key = key
        self.layer_job = LayerJob(ws, key, uv_as, self.interp, files=self.layer_files)
        try:
            await self.layer_job.ensure(
                self.dir / "lock.txt",
                self.home,
                self.log,
                unit=f"{self.build_id}-install",
                cwd=self.checkout,  # the lock's `./pkg` paths are the checkout's
                after_sync=lambda: self._venv_scan.start(self.venv, "venv"),
            )
        except NeedsBuild:
            self._release_layer()
            self.layer_job = None
            raise

    def _release_layer(self) -> None:
        """This build no longer holds its layer (pruning may take it)."""
        key, self._held_key = self._held_key, ""
        if key:
            n = self.ws.layers_in_use.get(key, 1) - 1
            if n <= 0:
                self.ws.layers_in_use.pop(key, None)
            else:
                self.ws.layers_in_use[key] = n

    async def extensions(self) -> None:
        await extcheck.check_layer_and_code(
            self.trees, self.log, self._venv_scan, self.layer, "venv"
        )

    @property
    def layer(self) -> Path:
        assert self.layer_job is not None
        return self.layer_job.path

    @property
    def venv(self) -> Path:
        return self.layer / "venv"

    @property
    def trees(self) -> list[tuple[str, Path]]:
        """The image's trees as the image names them: the layer and the checkout."""
        return [("venv", self.venv), (self.checkout.name, self.checkout)]

    def site_packages(self) -> Path:
        return self.venv / "lib" / f"python{self.interp.minor}" / "site-packages"

    async def bundle(self) -> None:
        assert self.spec is not None
        admin = self.site_packages() / "django" / "contrib" / "admin" / "static" / "admin"
        admin_link = None
        if admin.is_dir():
            shortcuts = self.image_root / "shortcuts"
            shortcuts.mkdir()
            os.chmod(shortcuts, 0o755)
            rel = os.path.relpath(admin, self.layer)  # venv/lib/.../admin, as in the image
            os.symlink(os.path.join("..", rel), shortcuts / "django-admin-media")
            admin_link = "shortcuts/django-admin-media"
        manifest = {
            "format": IMAGE_FORMAT,
            "app": self.app,
            "build_id": self.build_id,
            "checkout_name": self.spec.checkout_name,
            "python": pylayer.manifest_entry(self.interp),
            "lock_digest": locks.lock_digest(self.lock),
            "layer": self.layer_key,
            "django_admin_media": admin_link,
            "created": time.time(),
        }
        (self.image_root / "roost-image.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(self.image_root / "roost-image.json", 0o644)

    def runtime_env(self) -> dict[str, str]:
        assert self.spec is not None
        rv = RuntimeVars(
            app_id=self.app,
            app_dir=self.checkout,
            venv_dir=self.venv,
            data_directory=self.home / "data",
            extra_env=dict(self.config_env),  # config vars and credentials win, as on a runner
            bundle_config_dir=self.config_dir,
        )
        env = environment(self.spec, rv, base_env(self.home))
        env.update(HOME=str(self.home), TMPDIR=str(self.home))
        # No bytecode written (base_env: the checkout ships), and no pycache
        # prefix, which would hide the layer's own bytecode: with it every
        # check compiled flask and the rest anew (0.8 s of a code-only build).
        return env

    @property
    def config_dir(self) -> Path:
        return self.dir / "config"

    async def configure(self) -> None:
        """The app's config vars and services, for the steps that run its code."""
        assert self.spec is not None
        if self._env_source is not None:
            self.config_env = await self._env_source(self.spec)
        config = bc.build_bundle_config(
            self.spec.env, self.config_env, self.home / "data", self.app
        )
        bc.write_bundle_config(self.config_dir, config, self.user)
        self.log("       " + bc.summary(config, self.config_env))

    async def check(self) -> None:
        await appsteps.check(self)

    async def collect_static(self) -> None:
        await appsteps.collect_static(self)

    async def pack(self) -> None:
        assert self.spec is not None and self.layer_job is not None
        self._disk(64 << 20)
        members = [self.spec.checkout_name, "roost-image.json"]
        if (self.image_root / "shortcuts").exists():
            members.append("shortcuts")
        store, root = self.ws.store, self.image_root
        code, code_size, created = await run_abortable(
            lambda abort: pack_tree(store, root, members, TAR_FLAGS, self.ws.user, abort)
        )
        if created:
            self._committed.append(code)
        self.code_digest = code
        if self.installed:
            self.log("       waiting for the dependency layer to be named")
        waited = self._clock()
        self.layer_blob = blob = await self.layer_job.blob_digest()
        self.step_times["pack.wait"] = self._clock() - waited  # for the layer's name
        layers = [
            LayerRef(digest=blob.digest, size=blob.size, path="venv", kind="dependencies",
                     files=blob.files),
            LayerRef(digest=code, size=code_size, kind="code"),
        ]  # fmt: skip
        # The interpreter's, when carried: shared, so a failed build never removes it.
        layers += await pylayer.image_layers(self.ws, self.interp)
        self.image_digest, self.image_size, created = store_manifest(store, layers)
        if created:
            self._committed.append(self.image_digest)
        self.log(f"       layers: dependencies {blob.digest[7:19]} ({blob.size / 1e6:.1f} MB), "
                 f"code {code[7:19]} ({code_size / 1e3:.0f} kB)")  # fmt: skip
        self.static_digest = ""
        if self.static_bundle is not None:
            staging, limit = self.static_bundle, self.ws.settings.max_upload_bytes
            packed = await run_abortable(
                lambda abort: pack_static_tree(store, staging, limit, abort)
            )
            self.static_digest = packed.digest
            if packed.created:
                self._committed.append(packed.digest)
            for line in packed.dropped[:20]:
                self.log(f"       static: {line}: not bundled (regular files only)")
            if len(packed.dropped) > 20:
                self.log(f"       static: {len(packed.dropped) - 20} more entries not bundled")
            self.log(f"       static bundle: {packed.files} files")

    image_digest: str = ""
    image_size: int = 0
    static_digest: str = ""
