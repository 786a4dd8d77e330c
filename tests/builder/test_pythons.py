"""The interpreters a builder offers apps (roost.builder.pythons) and the layer an
image carries one in (roost.builder.pylayer)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec
from roost.builder import pylayer
from roost.builder.errors import BuildError
from roost.builder.interpreter import Interpreter
from roost.builder.pipeline import Build
from roost.builder.pythons import Pythons, candidate_paths, discover, usable
from roost.builder.sandbox import BuildUser
from roost.builder.workspace import Workspace
from roost.tenant.launch import Tenancy

from .conftest import EXAMPLES, tar_dir

PYENV = Path("/root/.pyenv/versions")
HELLO = EXAMPLES / "hello"


def interp(version: str, prefix: str, implementation: str = "cpython") -> Interpreter:
    minor = ".".join(version.split(".")[:2])
    path = f"{prefix}/bin/python{minor}"
    return Interpreter(path, version, implementation, "x86_64", prefix)


def test_found_where_pyenv_uv_and_the_system_put_them(tmp_path: Path) -> None:
    def exe(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        path.chmod(0o755)

    home = tmp_path / "home"
    for version in ("3.12.1", "3.13.0"):
        exe(home / ".pyenv" / "versions" / version / "bin" / "python3")
    exe(tmp_path / "uv" / "cpython-3.11.9-linux-x86_64-gnu" / "bin" / "python3")
    own = str(home / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3")
    found = candidate_paths("", own, str(home), {"UV_PYTHON_INSTALL_DIR": str(tmp_path / "uv")})
    assert found[:3] == [
        str(home / ".pyenv/versions/3.12.1/bin/python3"),
        str(home / ".pyenv/versions/3.13.0/bin/python3"),
        str(tmp_path / "uv/cpython-3.11.9-linux-x86_64-gnu/bin/python3"),
    ]
    # Then the system's python3.N (not python3.N-config), each once, links resolved.
    assert all(os.path.basename(p).startswith("python3.") for p in found[3:])
    assert not any(p.endswith("-config") for p in found) and len(set(found)) == len(found)
    # Configured: exactly those, a directory standing for its bin/python3.
    configured = f"{home}/.pyenv/versions/3.13.0:/usr/bin/python3.11"
    assert candidate_paths(configured, own, str(home), {}) == [
        str(home / ".pyenv/versions/3.13.0/bin/python3"),
        os.path.realpath("/usr/bin/python3.11"),
    ]


def test_what_is_offered() -> None:
    assert usable(interp("3.10.13", "/opt/a")) and usable(interp("3.13.0", "/opt/b"))
    assert not usable(interp("3.9.18", "/opt/c"))
    assert not usable(interp("3.10.14", "/opt/pypy", "pypy"))
    assert not usable(interp("3.14.0a1", "/opt/d"))
    # Carried: an installation of its own, not the host's /usr.
    assert interp("3.12.1", "/root/.pyenv/versions/3.12.1").carried
    assert not interp("3.11.2", "/usr").carried and not interp("3.11.2", "/usr/local").carried


def test_a_build_gets_what_its_app_asks_for_or_a_clear_error() -> None:
    default = interp("3.11.7", "/opt/311")
    pythons = Pythons(
        available=(interp("3.10.13", "/opt/310"), default, interp("3.13.0", "/opt/313")),
        default=default,
    )
    assert pythons.for_app(AppSpec()) is default
    assert pythons.for_app(AppSpec(python_version="3.13")).version == "3.13.0"
    with pytest.raises(BuildError) as err:
        pythons.for_app(AppSpec(python_version="3.7", python_source="runtime.txt"))
    assert str(err.value) == (
        "python 3.7 is not available; this builder has 3.10, 3.11, 3.13 (asked for by runtime.txt)"
    )


async def test_configured_interpreters_are_probed_and_a_bad_one_refused(tmp_path: Path) -> None:
    me = BuildUser(name="root", uid=os.getuid(), gid=os.getgid(), dropped=False)
    off = Tenancy("unconfined", enabled=False)
    own = interp("3.11.2", "/usr")
    got = await discover(f"{PYENV}/3.13.0:{PYENV}/3.10.13", False, own, me, tmp_path, off)
    assert [(i.version, i.prefix, i.carried) for i in got.available] == [
        ("3.10.13", f"{PYENV}/3.10.13", True),
        ("3.13.0", f"{PYENV}/3.13.0", True),
    ]
    assert got.default.version == "3.13.0"  # none of Roost's own minor: the newest
    with pytest.raises(
        BuildError, match=r"ROOST_BUILD_PYTHONS: .*3\.9.*cpython 3\.9\.18: not offered"
    ):
        await discover(f"{PYENV}/3.9.18", False, own, me, tmp_path, off)
    with pytest.raises(BuildError, match="ROOST_BUILD_PYTHONS: /nowhere/bin/python3"):
        await discover("/nowhere/bin/python3", False, own, me, tmp_path, off)


async def test_the_interpreter_layer_holds_what_apps_run_and_is_packed_once(
    ws: Workspace,
) -> None:
    py = next(i for i in ws.pythons.available if i.carried)
    first = await pylayer.ensure_layer(ws, py)
    assert await pylayer.ensure_layer(ws, py) == first  # packed once
    with tarfile.open(ws.store.path(first.digest)) as tar:
        names = set(tar.getnames())
    lib = f"lib/python{py.minor}"
    assert f"bin/python{py.minor}" in names and f"{lib}/os.py" in names
    assert f"{lib}/encodings/__init__.py" in names
    for gone in (f"{lib}/test", f"{lib}/site-packages", f"{lib}/idlelib"):
        assert not any(n == gone or n.startswith(gone + "/") for n in names), gone
    assert not any(n.endswith((".a", ".opt-1.pyc", ".opt-2.pyc")) for n in names)
    # A blob gone from the store (collected) is packed again, to the same bytes.
    ws.store.delete(first.digest)
    assert await pylayer.ensure_layer(ws, py) == first


async def test_the_checkout_cannot_take_the_interpreter_layer_s_name(ws: Workspace) -> None:
    ini = (HELLO / "epio.ini").read_text() + "\n[checkout]\ndirectory_name = python\n"
    build = Build(ws, "p1", "hello", tar_dir(HELLO, {"epio.ini": ini}), lambda _: None, app_id=11)
    with pytest.raises(BuildError, match="directory_name 'python' is not allowed"):
        await build.run()
