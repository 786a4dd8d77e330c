"""Build benchmark: serial pip vs Roost's builder (issue 4).

Sample app: a WSGI app with the 15 requirements of ep.io's typical large app.
Measured (medians of several repetitions, each from the same starting state):
  pip_serial         `pip install --no-cache-dir -r requirements.txt` into a fresh venv,
                     from the package index (the machine's pip configuration ignored)
  roost_cold         full Roost build, empty uv cache, no layers, no lock
  roost_warm         full Roost build, warm uv cache, lock known, no dependency layer
                     (so the venv is installed again, offline, named by its files
                     and its archive packed and checked into the store; the
                     identical archive from the earlier build is then dropped, so
                     the work is all still done). Timed as the builder daemon
                     delivers its result: once the layer is named by its file
                     manifest, before its archive is stored (the copy to a
                     second host waits for it).
                     The builder's bytecode store stays, as uv's cache does: with a
                     lock that really changed, the earlier layer still links every
                     module's pyc, and only the changed packages' modules compile
                     (roost.builder.bytecode)
  roost_unchanged    full Roost build of a code-only change (lock and layer reused:
                     only the code layer and the manifest are written)
  uv_sync_offline    bare `uv pip sync --offline` of the same lock into an empty venv
                     (uv's defaults: venv and cache on disk, hard-linking; also
                     printed, not a target: the same with venv and cache in a tmpfs,
                     hard-linking, which is where Roost's builder makes its layers
                     when it can, so the same install without Roost's packing; and
                     that with --compile-bytecode, which is what uv alone needs to
                     make what a Roost layer holds, since bare uv writes no bytecode).
                     The venv is made untimed, of the interpreter the builds use.
  phases             per rep, where the warm build's time went: its install's jail
                     set-up, uv venv, the offline sync and the layer's bytecode (each
                     to the marker line the install's one shell prints after it), the
                     naming of the layer by its file manifest (roost.images.treescan:
                     every entry stat'ed, only files the builder's hash cache has not
                     seen read; from install's end, in the background), how much of
                     it the build waited for, the layer's whole pack (named, then
                     stored: tar into the store, every member checked against the
                     manifest) and how long after the build's end it was stored
                     (builder/layerpack.py); then what
                     follows the build before a release may be made: the image's copy
                     to a second store over the real wire (CURVE ZeroMQ on loopback,
                     roost.images.pull, every blob hashed as it lands: the copying
                     stage; the receiver in a process of its own, bench/copyrecv.py,
                     as a second host's), asked for as the build ends, as the daemon's result lets
                     the controller do, from the builder's image store as it answers
                     (streaming a layer still being stored), timed to its verified end
                     (copy_after_build); and a runner's unpacking of the layer: a plain
                     unpack of the archive beside the real one, which checks the tree
                     against the layer's file manifest (archive.unpack_layer_archive),
                     then the whole image made ready by a runner's ImageCache: into an
                     empty cache (ensure_empty_cache), and into one that already holds
                     the previous release's layer (unpack_after_previous: the warm
                     layer without two packages, CHANGED, as a changed lock's would
                     be; the new layer links the files it holds and tar writes the rest)
  layer_name         the naming of each warm build's layer by its files (the phase
                     layer.name above)
Before each timed run the filesystem is synced (os.sync, untimed), so no run pays
for the writeback of the one before it (this disk makes metadata-heavy installs
wait on earlier deletes and writes), and reps alternate whether the bare uv sync
runs before or after the Roost builds. Per-rep lines show the warm build's install,
extensions and pack steps (pack = code layer + waiting for the dependency layer's
blob, packed in the background from the end of install) and the rest of its steps.
`--warm-only` leaves out the cold builds and serial pip.
Run as root to measure the real thing (build steps as the unprivileged user).
`--quick` does fewer repetitions. Needs PyPI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import msgspec

from roost.builder.daemon import images_handlers
from roost.builder.layerpack import name_by_files, pack_named
from roost.builder.pipeline import Build
from roost.builder.ramlayers import sweep_orphans
from roost.builder.sandbox import PASS_ENV, BuildUser
from roost.builder.workspace import Workspace
from roost.images.archive import unpack, unpack_layer_archive
from roost.images.cache import ImageCache
from roost.images.layerarchive import FILES_MEMBER
from roost.images.manifest import encode_manifest, read_manifest
from roost.images.store import ImageStore
from roost.images.treescan import HashCache
from roost.settings import Settings
from roost.wire.keys import generate_keypair, write_keypair
from roost.wire.node import Node
from roost.wire.rpc import RpcServer

REQUIREMENTS = """\
Django
psycopg[binary]
gunicorn
redis
celery
requests
pillow
django-environ
whitenoise
djangorestframework
python-dateutil
sentry-sdk
markdown
django-storages
bleach
"""

APP = '''\
"""Benchmark app: a WSGI callable; the dependencies are what is measured."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello %s\\n"]
'''

EPIO = "[wsgi]\nrequirements = requirements.txt\nentrypoint = app:application\n"


def upload(version: int) -> bytes:
    files = {"app.py": APP % version, "requirements.txt": REQUIREMENTS, "epio.ini": EPIO}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Bench:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.n = 0
        self.steps: dict[str, float] = {}
        self.image = ""
        self.layer = ""

    def log(self, line: str) -> None:
        if os.environ.get("BENCH_VERBOSE"):
            print(line, file=sys.stderr)

    async def workspace(self, root: Path) -> Workspace:
        return await Workspace.open(root, Settings(build_timeout_s=1800))

    async def build(
        self, ws: Workspace, previous_lock: str = "", copy_to: Path | None = None
    ) -> tuple[float, str]:
        self.n += 1
        settle()
        start = time.perf_counter()
        build = Build(
            ws, f"bench{self.n}", "bench", upload(self.n), self.log,
            previous_lock_text=previous_lock,
        )  # fmt: skip
        # As the daemon runs it: the result once a fresh layer's blob is named;
        # the blob's storing (builder/layerpack.py) timed on from there.
        out = await build.run(settle=False)
        took = time.perf_counter() - start
        # As the daemon's result lets the controller ask for it: the copy at once.
        copy = asyncio.create_task(copy_image(ws, out.image_digest, copy_to)) if copy_to else None
        if error := await build.stored():
            raise RuntimeError(error)
        self.steps = dict(out.step_times)
        self.steps["pack.stored_after_build"] = time.perf_counter() - start - took
        if copy is not None:
            self.steps["copy_after_build"] = await copy
        if build.layer_job is not None:
            self.steps |= {f"layer.{k}": v for k, v in build.layer_job.phases.items()}
        self.image, self.layer = out.image_digest, out.layer_digest
        return took, out.lock

    async def cold(self) -> tuple[float, str]:
        root = self.base / f"cold{self.n}"
        ws = await self.workspace(root)
        took, lock = await self.build(ws)
        shutil.rmtree(root, ignore_errors=True)
        return took, lock

    def wipe_layers(self, ws: Workspace) -> None:
        for p in ws.layers.iterdir():
            shutil.rmtree(p)


async def copy_image(ws: Workspace, image: str, dest: Path) -> float:
    """The image pulled, as a runner's copy is, into a new store on disk: by chunk
    requests to a real CURVE RPC server answering as the builder daemon's image
    store does (loopback), from another process (bench/copyrecv.py, a second
    host's), asked for at once, while the layer may still be being stored
    (builder/layerpack.py); seconds until the copy is complete and verified."""
    skp, ckp = generate_keypair(), generate_keypair()
    keys = Path(tempfile.mkdtemp(prefix="roost-bench-keys-"))
    write_keypair(keys, "client", ckp)
    async with Node(skp, [ckp.public]) as sn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", images_handlers(ws.store, ws.storing))
        task = asyncio.create_task(server.serve())
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).parent / "copyrecv.py"), str(keys),
                server.address, skp.public_text, image, str(dest),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"the copy failed (exit {proc.returncode})")
            return float(out.decode().strip())
        finally:
            shutil.rmtree(keys, ignore_errors=True)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def unpack_times(second: ImageStore, layer: str, base: Path) -> tuple[float, float]:
    """A runner's unpack of the copied layer: (plain, and the real one, the tree
    checked against the layer's file manifest) s."""
    blob = second.path(layer)
    start = time.perf_counter()
    (base / "unpacked").mkdir()
    unpack(blob, base / "unpacked")
    plain = time.perf_counter() - start
    start = time.perf_counter()
    unpack_layer_archive(blob, base / "checked", layer)
    checked = time.perf_counter() - start
    for d in ("unpacked", "checked"):
        shutil.rmtree(base / d, ignore_errors=True)
    return plain, checked


# The packages the previous release's layer lacks (bench_previous_layer):
# a warm build's lock changes one or two.
CHANGED = ("bleach", "markdown")


def previous_layer(second: ImageStore, image: str, layer: str, base: Path) -> str:
    """An image as the previous release's: the warm layer without two packages
    (CHANGED), named by its files and packed as a builder does, into `second`."""
    tree = base / "previous"
    tree.mkdir()
    unpack(second.path(layer), tree)
    (tree / FILES_MEMBER).unlink()
    for site in tree.glob("lib/python*/site-packages"):
        for p in site.iterdir():
            if p.name.lower().startswith(CHANGED) and p.is_dir():
                shutil.rmtree(p)
    me = BuildUser(name="me", uid=os.geteuid(), gid=os.getegid(), dropped=False)
    named = name_by_files(tree, HashCache())
    digest, size, _ = pack_named(second, tree, named, me, threading.Event())
    shutil.rmtree(tree)
    manifest = read_manifest(second.path(image))
    assert manifest is not None
    layers = [
        msgspec.structs.replace(lr, digest=digest, size=size) if lr.digest == layer else lr
        for lr in manifest.layers
    ]
    return second.put_bytes(encode_manifest(msgspec.structs.replace(manifest, layers=layers)))


async def cache_times(
    second: ImageStore, image: str, layer: str, base: Path
) -> tuple[float, float]:
    """The warm image made ready by a runner's ImageCache, as a deploy waits for it:
    into an empty cache, and into one already holding the previous release's
    (`previous_layer`), whose files the warm layer then links. Seconds each."""
    previous = previous_layer(second, image, layer, base)

    async def fetch(digest: str, dest: Path) -> Path:
        os.link(second.path(digest), dest / "blob")
        return dest / "blob"

    times = []
    for before in (None, previous):
        cache = ImageCache(base / "runner-cache", max_bytes=1 << 40)
        if before is not None:
            await cache.ensure(before, fetch)
        settle()
        start = time.perf_counter()
        await cache.ensure(image, fetch)
        times.append(time.perf_counter() - start)
        shutil.rmtree(base / "runner-cache")
    return times[0], times[1]


def settle() -> None:
    """Flush earlier runs' dirty pages and journal before timing the next one."""
    os.sync()


def pip_serial(base: Path, python: str, uv_bin: str) -> float:
    venv = base / "pipvenv"
    shutil.rmtree(venv, ignore_errors=True)
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(
        [uv_bin, "venv", "--seed", "-q", "--python", python, str(venv)], check=True, env=env
    )
    (base / "req.txt").write_text(REQUIREMENTS)
    # pip as the issue measured it, from the package index, with what Roost's
    # builder gives uv: the index settings of PASS_ENV and no configuration
    # file (this machine's pip.conf and PIP_FIND_LINKS name a local wheel
    # directory and a constraints file, which the builder never sees).
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in PASS_ENV}
    pip_env["PIP_CONFIG_FILE"] = os.devnull
    settle()
    start = time.perf_counter()
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", "-r", str(base / "req.txt")],
        check=True,
        env=pip_env,
    )
    took = time.perf_counter() - start
    shutil.rmtree(venv, ignore_errors=True)
    return took


def uv_sync_offline(uv_bin: str, python: str, cache: Path, lock: str, base: Path,
                    venv_base: Path | None = None, bytecode: bool = False) -> float:  # fmt: skip
    venv = (venv_base or base) / "uvvenv"
    shutil.rmtree(venv, ignore_errors=True)
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(cache)}
    if bytecode:  # as the builder's layers are: checked-hash pycs
        env["SOURCE_DATE_EPOCH"] = "315619200"
    subprocess.run([uv_bin, "venv", "-q", "--python", python, str(venv)], check=True, env=env)
    (base / "lock.txt").write_text(lock)
    settle()
    start = time.perf_counter()
    subprocess.run(
        [uv_bin, "pip", "sync", "-q", "--offline", "--python", str(venv / "bin" / "python"),
         *(["--compile-bytecode"] if bytecode else []), str(base / "lock.txt")],
        check=True, env=env,
    )  # fmt: skip
    took = time.perf_counter() - start
    shutil.rmtree(venv, ignore_errors=True)
    return took


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--warm-only", action="store_true",
                    help="only the warm and unchanged builds beside bare uv (no cold build, "
                         "no serial pip: their lines and ratios are left out)")  # fmt: skip
    args = ap.parse_args()
    reps_slow, reps = (1, 3) if args.quick else (3, 7)
    base = Path(tempfile.mkdtemp(prefix="roost-bench-build-"))
    os.chmod(base, 0o755)
    ram = Path(tempfile.mkdtemp(prefix="roost-bench-uv-", dir=Settings().builder_ram_dir))
    b = Bench(base)
    try:
        ws = await b.workspace(base / "warm")
        app_py = ws.pythons.default  # the apps' default Python: what the builds use
        print(f"interpreter {app_py.path} ({app_py.version}); build user {ws.user.name}"
              f"{'' if ws.user.dropped else ' (not root: same user)'}", flush=True)  # fmt: skip
        cold = []
        for i in range(0 if args.warm_only else reps_slow):
            took, lock = await b.cold()
            cold.append(took)
            print(f"roost cold build {i + 1}: {took:.2f} s", flush=True)
        # Prime the shared cache of the warm workspace, then measure.
        _, lock = await b.build(ws)
        print(f"naming of the first layer by its files, every file read: "
              f"{b.steps.get('layer.name', 0):.3f} s", flush=True)  # fmt: skip
        # Bare uv gets copies of the builder's warm cache (it runs as this
        # user, and must not leave its files in the build user's cache): one on
        # disk, uv's own setting, and one in the tmpfs, as the builder has it
        # (roost.builder.uvcache).
        disk_cache, ram_cache = base / "uv-cache", ram / "uv-cache"
        for copy in (disk_cache, ram_cache):
            subprocess.run(["cp", "-a", str(ws.uv_cache), str(copy)], check=True)

        def bare(ram_venv: bool = False, bytecode: bool = False) -> float:
            cache = ram_cache if ram_venv else disk_cache
            return uv_sync_offline(
                ws.uv, python, cache, lock, base, ram if ram_venv else None, bytecode
            )

        python = app_py.path  # bare uv syncs into a venv of the builds' interpreter
        warm, unchanged, uvs, uvs_ram, uvs_pyc = [], [], [], [], []
        names = []
        phases: dict[str, list[float]] = {}
        for i in range(reps):
            # Alternate which goes first: on a shared disk, whatever ran just
            # before a measurement can slow it (writeback, discards).
            if i % 2:
                uvs.append(bare())
            b.wipe_layers(ws)
            second = base / "second-store"
            took, _ = await b.build(ws, previous_lock=lock, copy_to=second)
            warm.append(took)
            steps = b.steps
            names.append(steps["layer.name"])
            unpacked, checked = unpack_times(ImageStore(second), b.layer, base)
            empty, after = await cache_times(ImageStore(second), b.image, b.layer, base)
            shutil.rmtree(second)
            times = {k: v for k, v in steps.items() if k.startswith(("layer.", "pack.", "copy"))}
            times |= {"unpack": unpacked, "unpack+check": checked, "ensure_empty_cache": empty,
                      "unpack_after_previous": after}  # fmt: skip
            for k, v in times.items():
                phases.setdefault(k, []).append(v)
            took2, _ = await b.build(ws, previous_lock=lock)
            unchanged.append(took2)
            if not i % 2:
                uvs.append(bare())
            uvs_ram.append(bare(ram_venv=True))
            uvs_pyc.append(bare(ram_venv=True, bytecode=True))
            other = took - steps["install"] - steps["extensions"] - steps["pack"]
            print(f"rep {i + 1}: warm {took:.3f} s (install {steps['install']:.3f}, "
                  f"extensions {steps['extensions']:.3f}, pack {steps['pack']:.3f}, "
                  f"the rest {other:.3f}), unchanged {took2:.3f} s, "
                  f"uv sync offline {uvs[-1]:.3f} s (into tmpfs "
                  f"{uvs_ram[-1]:.3f} s; into tmpfs with bytecode {uvs_pyc[-1]:.3f} s); "
                  f"layer named by its files in {names[-1]:.3f} s", flush=True)  # fmt: skip
            print(f"rep {i + 1} phases: " + ", ".join(f"{k} {v:.3f}" for k, v in times.items()),
                  flush=True)  # fmt: skip
        pip = []
        for i in range(0 if args.warm_only else reps_slow):
            pip.append(pip_serial(base, app_py.path, ws.uv))
            print(f"serial pip {i + 1}: {pip[-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(ram, ignore_errors=True)
        sweep_orphans(Path(Settings().builder_ram_dir))  # the workspaces' in-memory layers
    med = statistics.median
    w, u, s = med(warm), med(unchanged), med(uvs)
    print(
        f"(uv pip sync --offline into a tmpfs venv, where Roost's layers go: "
        f"{med(uvs_ram):.3f} s; Roost's warm build is {w / med(uvs_ram):.2f}x that. "
        f"The same with --compile-bytecode, a layer as Roost's carries it: "
        f"{med(uvs_pyc):.3f} s; Roost's warm build is {w / med(uvs_pyc):.2f}x that)"
    )
    if pip:
        print(f"pip_serial_s: {med(pip):.3f}")
        print(f"roost_cold_s: {med(cold):.3f}")
    print("phases (medians, s): " + ", ".join(f"{k} {med(v):.3f}" for k, v in phases.items()))
    print(f"roost_warm_s: {w:.3f}")
    print(f"roost_unchanged_s: {u:.3f}")
    print(f"uv_sync_offline_s: {s:.3f}")
    if pip:
        print(f"warm_speedup_vs_pip: {med(pip) / w:.1f}")
        print(f"unchanged_speedup_vs_pip: {med(pip) / u:.1f}")
    print(f"layer_name_s: {med(names):.3f}")
    print(f"warm_vs_uv_sync: {w / s:.2f}")
    # Roost's layers go to a tmpfs: the same kind of place for both.
    print(f"warm_vs_uv_sync_tmpfs: {w / med(uvs_ram):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
