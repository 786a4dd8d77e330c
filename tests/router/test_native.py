"""The router's request path runs compiled, and never from a stale build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import roost.router.client  # noqa: F401  (loads every hot module)
from roost.router import native

SRC = Path(native.__file__).resolve().parents[2]


def test_hot_modules_are_the_compiled_ones() -> None:
    # scripts/install compiles them (scripts/build-ext); if the build silently
    # stopped producing them, the router would still work, only slower.
    assert native.stale_reason() is None, native.STATUS
    assert native.COMPILED, native.STATUS
    used = native.modules_in_use()
    assert sorted(used) == sorted(native.HOT)
    for name, path in used.items():
        assert path.endswith(native.EXT_SUFFIX), f"{name} loaded from {path}"


def _fake_build(directory: Path) -> None:
    for name in native.HOT:
        (directory / f"{name}.py").write_text(f"X = {name!r}\n")
        (directory / f"{name}.pxd").write_text("")
        (directory / f"{name}{native.EXT_SUFFIX}").write_bytes(b"\x7fELF")
    (directory / native.MANIFEST).write_text(
        __import__("json").dumps(native.manifest_for(directory, "3"))
    )


def test_stale_reason_notices_every_kind_of_change(tmp_path: Path) -> None:
    assert native.stale_reason(tmp_path) == "not compiled (run scripts/install)"
    _fake_build(tmp_path)
    assert native.stale_reason(tmp_path) is None
    first, last = native.HOT[0], native.HOT[-1]

    (tmp_path / f"{last}.py").write_text("X = 'edited'\n")
    assert f"{last}.py or {last}.pxd changed" in (native.stale_reason(tmp_path) or "")
    _fake_build(tmp_path)
    (tmp_path / f"{first}.pxd").write_text("cdef class Y: pass\n")
    assert f"{first}.py or {first}.pxd changed" in (native.stale_reason(tmp_path) or "")

    _fake_build(tmp_path)
    ext = tmp_path / f"{first}{native.EXT_SUFFIX}"
    ext.write_bytes(b"\x7fELF and more")  # rebuilt by something else
    assert "is not the one the build produced" in (native.stale_reason(tmp_path) or "")
    ext.unlink()
    assert "is missing" in (native.stale_reason(tmp_path) or "")


def test_an_edited_source_runs_instead_of_its_stale_extension(tmp_path: Path) -> None:
    # A copy of the package with the compiled modules, then client.py edited
    # without rebuilding: the import must give the edited source, for every
    # hot module (compiled and plain ones must not mix), with a warning.
    copy = tmp_path / "roost"
    shutil.copytree(SRC / "roost", copy, ignore=shutil.ignore_patterns("__pycache__"))
    client = copy / "router" / "client.py"
    client.write_text(client.read_text() + "\nEDITED = True\n")
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING);"
        "import importlib, roost.router.worker, roost.router.client as c;"
        "from roost.router import native;"
        "[importlib.import_module('roost.router.' + n) for n in native.HOT];"
        "print(c.EDITED, native.COMPILED);"
        "print(*native.modules_in_use().values(), sep='\\n')"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "True False"
    assert sorted(lines[1:]) == sorted(str(copy / "router" / f"{n}.py") for n in native.HOT)
    assert "client.py or client.pxd changed since it was compiled" in out.stderr
