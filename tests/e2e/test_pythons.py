"""An app's own Python, end to end: two apps on two CPython versions, each
image carrying its interpreter, which the runner's sandbox sees only through
the image; a version the builder lacks fails the build naming those it has."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.platform import running_platform

pytestmark = pytest.mark.e2e

PYENV = Path("/root/.pyenv/versions")

# A bare WSGI app (no requirements but the gunicorn Roost adds) reporting the
# interpreter it runs on and where, in its sandbox, that comes from.
APP = """
import json, os, sys

def _mount_root(path):
    # /proc/self/mountinfo: field 4 is the directory of the source file system
    # mounted, field 5 where; the interpreter's installation is a mount point.
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] == path:
            return fields[3]
    return None

def app(environ, start_response):
    prefix = sys.base_prefix
    minor = "%d.%d" % sys.version_info[:2]
    body = json.dumps({
        "version": sys.version.split()[0],
        "prefix": prefix,
        "mounted_from": _mount_root(prefix),
        # The host's installation has its test suite; the image's layer not.
        "test_suite": os.path.exists(os.path.join(prefix, "lib", "python" + minor, "test")),
        # Nor is any other interpreter of the host's there.
        "others": sorted(v for v in OTHERS if os.path.exists(v)),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""


def _installed(minor: str) -> Path:
    [prefix] = sorted(PYENV.glob(f"{minor}.*"))
    return prefix


def _app(root: Path, name: str, files: dict[str, str], others: list[str]) -> Path:
    d = root / name
    d.mkdir()
    (d / "app.py").write_text(APP.replace("OTHERS", repr(others)))
    (d / "requirements.txt").write_text("")
    (d / "Procfile").write_text("web: gunicorn app:app\n")
    for rel, text in files.items():
        (d / rel).write_text(text)
    return d


def _relocatable_copy(src: Path, dest: Path) -> None:
    """A copy of a pyenv installation that runs where it is put: pyenv's builds
    find libpython through an absolute RUNPATH (`src/lib`), which the copy's
    ELF files have turned into the same directory relative to `$ORIGIN`."""
    skip = shutil.ignore_patterns("test", "site-packages", "idlelib", "*.a", "share")
    shutil.copytree(src, dest, symlinks=True, ignore=skip)
    old = f"{src}/lib".encode() + b"\0"
    for dirpath, _, files in os.walk(dest):
        for name in files:
            path = Path(dirpath) / name
            data = b"" if path.is_symlink() else path.read_bytes()
            if data.startswith(b"\x7fELF") and old in data:
                rel = os.path.relpath(dest / "lib", dirpath)
                new = "$ORIGIN" if rel == "." else f"$ORIGIN/{rel}"
                path.write_bytes(data.replace(old, new.encode().ljust(len(old), b"\0")))


def test_two_apps_on_two_pythons_each_carried_by_its_image(tmp_path: Path) -> None:
    old, new = _installed("3.10"), _installed("3.13")
    assert (new / "lib" / "python3.13" / "test").is_dir()  # what the host has
    # py-old's interpreter is one the host will lose once it is built.
    mine = tmp_path / "pythons" / f"cpython-{old.name}"
    _relocatable_copy(old, mine)
    offered = [mine, _installed("3.11"), _installed("3.12"), new]
    others = [str(p) for p in (*PYENV.iterdir(), mine)]
    apps = {
        "py-old": _app(tmp_path, "py-old", {".python-version": "3.10\n"}, others),
        "py-new": _app(tmp_path, "py-new", {"runtime.txt": f"python-{new.name}\n"}, others),
    }
    env = {"ROOST_BUILD_PYTHONS": ":".join(str(p) for p in offered)}
    with running_platform(env) as platform:

        def serves(name: str, prefix: Path) -> None:
            page = wait_until(lambda: platform.get(name).text, 30, f"{name}'s page")
            got = json.loads(str(page))
            version = old.name if prefix == mine else prefix.name
            assert got["version"] == version, got
            assert got["prefix"] == str(prefix), got
            # The installation this sandbox runs is the runner's copy of the
            # image's interpreter layer, mounted at the path it was built at.
            layer = Path(got["mounted_from"])
            assert layer.parent.name == "layers" and len(layer.name) == 64, got
            assert list(platform.data.glob(f"runner*/**/layers/{layer.name}")), got
            # Not the host's: no test suite, and no other interpreter of the host's.
            assert got["test_suite"] is False and got["others"] == [str(prefix)], got

        for name, d in apps.items():
            platform.roost("apps", "create", name)
            r = platform.roost("deploy", str(d), "--app", name)
            assert "is live" in r.stdout
        serves("py-old", mine)
        serves("py-new", new)

        # The host loses py-old's interpreter; new instances of its image start
        # and serve all the same: the runner needs none of its own.
        shutil.rmtree(mine)
        platform.roost("restart", "--app", "py-old")
        wait_until(
            lambda: {(i["release"], i["state"]) for i in platform.ps("py-old")} == {(2, "up")},
            60,
            "py-old's instances restarted from its image",
        )
        serves("py-old", mine)

        # A version the builder does not have: the build says which there are.
        bad = _app(tmp_path, "py-old-37", {".python-version": "3.7\n"}, others)
        r = platform.roost("deploy", str(bad), "--app", "py-old", check=False)
        assert r.returncode != 0
        assert (
            "python 3.7 is not available; this builder has 3.10, 3.11, 3.12, 3.13 "
            "(asked for by .python-version)"
        ) in r.stdout + r.stderr
        assert json.loads(platform.get("py-old").text)["version"] == old.name
