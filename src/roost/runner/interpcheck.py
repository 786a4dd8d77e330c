"""Before an image's instances start here: the interpreter it needs is here, that version.

An image's venv runs on the interpreter its `roost-image.json` names
(`python`: path, version, implementation; a relative path is inside the
image). A runner without it, or with another version at that path, would
start instances that crash at once (a dangling `venv/bin/python`, or
extension modules built for another ABI). So once an image is unpacked and
before it is used, the runner asks that interpreter for its version, run the
way an instance would run it: as the app's own user in the app's sandbox
(the interpreter may be part of the image, which is the app's, never run as
root). Same implementation and major.minor (the ABI extension modules are
built for) passes; anything else makes the image unusable here, with an
instance error that says what is missing, and the supervisor tries it again
later with the image backoff (an operator may install it meanwhile).

An image whose manifest names no interpreter (older images) is not checked.

A pass is remembered (`Passed`) for that interpreter file as that app's
user: every code-only deploy makes a new image naming the same interpreter,
and asking it again cost each of them a sandboxed interpreter start before
its instances could. The key is the file's identity (device, inode, size,
mtime), so an interpreter replaced or removed at that path, or a carried
one in another layer, is asked again; a failure is never remembered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roost.proc.run import run_tool
from roost.proc.spawn import child_setup
from roost.runner.confine import (
    ConfineError,
    TenantDefaults,
    identity,
    image_binds,
    interpreter_mount,
)
from roost.runner.layout import safe_name
from roost.tenant.cgroups import Limits
from roost.tenant.launch import Prepared, Tenancy, TenantError, TenantSpec
from roost.tenant.sandbox import SandboxSpec
from roost.tenant.toolmask import TENANT_PATH
from roost.wire.messages import InstanceAssignment

MANIFEST = "roost-image.json"
PROBE = "import sys; print(sys.implementation.name, '%d.%d.%d' % sys.version_info[:3])"
_MAX_MANIFEST = 1 << 20


@dataclass(frozen=True)
class Needed:
    path: str  # as the manifest says it
    version: str  # "3.11.2"
    implementation: str = "cpython"

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def describe(self, path: Path) -> str:
        return f"{self.implementation} {self.version} at {path}"


def needed(manifest_text: str) -> Needed | None:
    """The interpreter a manifest names; None when it names none (or not readably)."""
    try:
        raw = json.loads(manifest_text).get("python")
        path, version = str(raw["path"]), str(raw["version"])
        impl = str(raw.get("implementation") or "cpython")
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
    return Needed(path, version, impl) if path and version else None


def interpreter_path(
    n: Needed, image_root: Path, mount: tuple[Path, Path] | None = None
) -> tuple[Path, Path]:
    """(where the sandbox sees it, where this host has it): they differ when the
    image carries its interpreter, bound at `mount` = (layer, path in sandbox)."""
    path = Path(n.path)
    if not path.is_absolute():
        path = image_root / path
    if mount is not None and path.is_relative_to(mount[1]):
        return path, mount[0] / path.relative_to(mount[1])
    return path, path


# (who, needed, file on the host, its device, inode, size, mtime)
PassKey = tuple[str, Needed, str, int, int, int, int]
Passed = set[PassKey]


def pass_key(who: str, n: Needed, on_host: Path) -> PassKey | None:
    """What a pass of `n` at `on_host` as `who` is remembered by; None: not there."""
    try:
        st = os.stat(on_host)
    except OSError:
        return None
    return (who, n, str(on_host), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def judge(n: Needed, path: Path, returncode: int | None, output: str) -> str | None:
    """What is wrong (an instance error), or None; returncode None: it is not there."""
    if returncode is None:
        return f"this runner lacks the interpreter the image needs: {n.describe(path)}"
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if returncode != 0:
        last = lines[-1] if lines else "no output"
        return (
            f"the interpreter the image needs, {n.describe(path)}, does not run here "
            f"(exit {returncode}: {last})"
        )
    words = lines[-1].split() if lines else []
    if len(words) == 2:
        impl, version = words
        if impl == n.implementation and version.split(".")[:2] == n.minor.split("."):
            return None
        return f"the image needs {n.describe(path)}, but that path here is {impl} {version}"
    return f"the interpreter the image needs, {n.describe(path)}, answered {output[-200:]!r}"


async def check_image(
    image_root: Path,
    prepare: Callable[[list[str]], Prepared | None],
    timeout: float = 30.0,
    passed: Passed | None = None,
    who: str = "",
) -> str | None:
    """Check the interpreter `image_root`'s manifest names; the problem, or None.

    `prepare` confines the probe (the app's identity and sandbox); None runs
    it unconfined (a runner that is not root runs its instances so too).
    `passed` remembers passes (for `who`, the identity `prepare` runs as).
    """
    try:
        with open(image_root / MANIFEST, "rb") as f:
            text = f.read(_MAX_MANIFEST).decode("utf-8", "replace")
    except OSError:
        return None
    n = needed(text)
    if n is None:
        return None
    path, on_host = interpreter_path(n, image_root, interpreter_mount(image_root))
    if not (os.path.isfile(on_host) and os.access(on_host, os.X_OK)):
        return judge(n, path, None, "")
    key = pass_key(who, n, on_host)
    if passed is not None and key is not None and key in passed:
        return None
    prepared = prepare([str(path), "-I", "-S", "-c", PROBE])
    argv = [str(on_host), "-I", "-S", "-c", PROBE]
    try:
        done = await run_tool(
            prepared.argv if prepared is not None else argv,
            timeout=timeout,
            env={"PATH": TENANT_PATH, "LANG": "C.UTF-8"},
            cwd=Path("/") if prepared is not None and prepared.sandboxed else image_root,
            setup=child_setup(enter=prepared.preexec if prepared is not None else None),
            merge_stderr=True,
        )
    except TimeoutError:
        return f"the interpreter the image needs, {n.describe(path)}, hung ({timeout:.0f} s)"
    except OSError as exc:
        return judge(n, path, 126, str(exc))
    finally:
        if prepared is not None:
            prepared.finish()
    problem = judge(n, path, done.returncode, done.output)
    if problem is None and passed is not None and key is not None:
        passed.add(key)
    return problem


def probe_spec(
    a: InstanceAssignment, image_root: Path, digest: str, defaults: TenantDefaults
) -> TenantSpec:
    """The probe's confinement: `a`'s app, its image read-only, nothing writable."""
    return TenantSpec(
        identity=identity(a),
        sandbox=SandboxSpec(
            cwd=image_root,
            hostname=safe_name(a.app)[:63],
            readonly=image_binds(image_root),
            mounts=tuple(filter(None, [interpreter_mount(image_root)])),
            hidden_files=defaults.hidden_files,
            hidden_dirs=defaults.hidden_dirs,
        ),
        limits=Limits(memory_mb=defaults.memory_mb, pids=16, cpu_weight=defaults.cpu_weight),
        unit=safe_name(f"pycheck-{digest.removeprefix('sha256:')[:16]}"),
    )


async def check_as_app(
    image_root: Path,
    digest: str,
    users: list[InstanceAssignment],
    tenancy: Tenancy,
    defaults: TenantDefaults,
    passed: Passed,
) -> str | None:
    """`check_image` for the runner's supervisor: asked as the app of the
    first instance that uses the image (`users`), in its sandbox when
    instances run confined; the problem, or None."""
    if tenancy.enabled and not users:
        return None  # no longer wanted: released unused, never started

    def prepare(argv: list[str]) -> Prepared | None:
        if not tenancy.enabled:
            return None
        spec = probe_spec(users[0], image_root, digest, defaults)
        return tenancy.prepare(spec, argv)

    who = f"{users[0].app_id}:{users[0].app}" if users else ""
    try:
        return await check_image(image_root, prepare, passed=passed, who=who)
    except (ConfineError, TenantError) as exc:
        return f"cannot check the image's interpreter: {exc}"
